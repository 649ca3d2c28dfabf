"""The git publisher: one commit on the job's branch, pushed to any git remote.

For non-GitLab remotes and the embedded default (a local bare repository). It works
with git plumbing in a throw-away repository, so nothing is checked out:

1. ``ls-remote`` the branch and the target branch;
2. fetch the branch if it exists, else the target (the new branch starts there);
3. build the tree: the base tree with every file written in;
4. same tree as the branch head -> nothing to commit (``unchanged``); otherwise
   ``commit-tree`` with the base as parent and push it, never with ``--force``.

A push refused because the branch moved (another job) starts again from step 1; an
existing branch is never deleted or reset. A branch head carrying this job's
``Tfgen-Job`` trailer is this job's own earlier attempt (a worker killed after the push):
its commit is reported as the job's commit, not as "unchanged".

``GIT_REMOTE`` may carry credentials (``https://user:token@host/repo.git``). The URL is
handed to git only through the throw-away repository's config file (not a command line,
which ``ps`` and a ``TimeoutExpired`` message show), and everything this publisher says
(result, errors, git's own messages, the lock key) goes through ``redact_credentials``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from app.core.locks import LocalLocks, LockFactory
from app.core.model import Change, PublishResult
from app.core.publish.base import branch_lock, made_by_job, redact_credentials
from app.errors import GitLabUnavailable, InternalError

__all__ = ["GitError", "GitPublisher"]

class GitError(RuntimeError):
    """A git command failed; ``stderr`` holds its message, credentials redacted."""

    def __init__(self, args: list[str], stderr: str) -> None:
        self.stderr = redact_credentials(stderr)
        super().__init__(f"git {' '.join(args[:2])}: {self.stderr.strip()[:500]}")


class GitPublisher:
    """Pushes the job's commit to ``remote`` (a URL or a path)."""

    uses_token = False

    def __init__(
        self,
        remote: str,
        *,
        author_name: str = "tfgen",
        author_email: str = "tfgen@localhost",
        lock_factory: LockFactory | None = None,
        timeout: float = 60.0,
        push_attempts: int = 3,
    ) -> None:
        self._remote = remote  # may hold credentials: only git sees it
        self.remote = redact_credentials(remote)
        self.author_name = author_name
        self.author_email = author_email
        self.lock_factory = lock_factory or LocalLocks()
        self.timeout = timeout
        self.push_attempts = push_attempts

    def _git(self, repo: Path, *args: str, stdin: str | None = None) -> str:
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": self.author_name, "GIT_AUTHOR_EMAIL": self.author_email,
            "GIT_COMMITTER_NAME": self.author_name, "GIT_COMMITTER_EMAIL": self.author_email,
            "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C",
        }
        proc = subprocess.run(
            ["git", "-C", str(repo), *args], input=stdin, capture_output=True, text=True,
            env=env, timeout=self.timeout, check=False,
        )
        if proc.returncode != 0:
            raise GitError(list(args), proc.stderr)
        return proc.stdout.strip()

    def _add_origin(self, repo: Path) -> None:
        """Point ``origin`` at the remote without putting its URL on a command line."""
        quoted = self._remote.replace("\\", "\\\\").replace('"', '\\"')
        if "\n" in quoted:
            raise GitError(["remote", "add"], "the remote URL holds a line break")
        with (repo / "config").open("a", encoding="utf-8") as config:
            config.write(f'[remote "origin"]\n\turl = "{quoted}"\n'
                         "\tfetch = +refs/heads/*:refs/remotes/origin/*\n")

    def _heads(self, repo: Path, *branches: str) -> dict[str, str]:
        refs = [f"refs/heads/{b}" for b in branches]
        out = self._git(repo, "ls-remote", "origin", *refs)
        heads = {}
        for line in out.splitlines():
            sha, ref = line.split("\t", 1)
            heads[ref.removeprefix("refs/heads/")] = sha
        return heads

    def publish(self, change: Change) -> PublishResult:
        """Commit ``change.files`` on ``change.branch`` and push it.

        Raises:
            InternalError: The remote does not exist (a setting to fix, not retried).
            GitLabUnavailable: The remote did not answer, the push kept losing races, or
                another job held the branch's lock too long (all retryable).
        """
        with branch_lock(self.lock_factory, f"git:{self.remote}:{change.branch}",
                         change.job_uuid,
                         f"branch {change.branch}: another job is still publishing it"):
            return self._publish_locked(change)

    def _publish_locked(self, change: Change) -> PublishResult:
        with tempfile.TemporaryDirectory(prefix="tfgen-git-") as tmp:
            repo = Path(tmp)
            try:
                self._git(repo, "init", "-q", "--bare")
                self._add_origin(repo)
                for _ in range(self.push_attempts):
                    result = self._attempt(repo, change)
                    if result is not None:
                        return result
            except GitError as e:
                if "does not appear to be a git repository" in e.stderr or \
                        "not found" in e.stderr.lower():
                    # A deployment's setting, not GitLab and not the request: INTERNAL.
                    raise InternalError(
                        f"git remote {self.remote} does not exist or is not a git "
                        "repository: set GIT_REMOTE, or run `python manage.py init-db "
                        "--demo`, which creates the embedded one") from e
                raise GitLabUnavailable(f"git remote failed: {e}") from e
            except subprocess.TimeoutExpired as e:
                raise GitLabUnavailable("git remote timed out") from e
        raise GitLabUnavailable(f"branch {change.branch} kept moving; gave up after "
                                f"{self.push_attempts} attempts")

    def branch_merged(self, branch: str, target_branch: str) -> str | None:
        """The target's head when ``branch``'s tip is an ancestor of it (merged), else None.

        Raises:
            GitLabUnavailable: The remote did not answer.
        """
        with tempfile.TemporaryDirectory(prefix="tfgen-git-") as tmp:
            repo = Path(tmp)
            try:
                self._git(repo, "init", "-q", "--bare")
                self._git(repo, "remote", "add", "origin", self.remote)
                heads = self._heads(repo, branch, target_branch)
                if branch not in heads or target_branch not in heads:
                    return None
                self._git(repo, "fetch", "-q", "origin", heads[branch], heads[target_branch])
                try:
                    self._git(repo, "merge-base", "--is-ancestor", heads[branch],
                              heads[target_branch])
                except GitError:
                    return None  # exit status 1: not an ancestor
                return heads[target_branch]
            except GitError as e:
                raise GitLabUnavailable(f"git remote failed: {e}") from e
            except subprocess.TimeoutExpired as e:
                raise GitLabUnavailable("git remote timed out") from e

    def _attempt(self, repo: Path, change: Change) -> PublishResult | None:
        heads = self._heads(repo, change.branch, change.target_branch)
        head = heads.get(change.branch)
        base = head or heads.get(change.target_branch)
        if base:
            self._git(repo, "fetch", "-q", "--depth=1", "origin", base)
            self._git(repo, "read-tree", base)
        else:
            self._git(repo, "read-tree", "--empty")
        for file in change.files:
            blob = self._git(repo, "hash-object", "-w", "--stdin", stdin=file.content)
            self._git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{file.path}")
        tree = self._git(repo, "write-tree")
        if head and tree == self._git(repo, "rev-parse", f"{head}^{{tree}}"):
            message = self._git(repo, "log", "-1", "--format=%B", head)
            own = made_by_job(message, change.job_uuid)
            return PublishResult(commit_sha=head, files=change.files, unchanged=not own,
                                 remote=self.remote, branch=change.branch)
        parents = ["-p", base] if base else []
        commit = self._git(repo, "commit-tree", tree, *parents, stdin=change.commit_message)
        try:
            self._git(repo, "push", "-q", "origin", f"{commit}:refs/heads/{change.branch}")
        except GitError as e:
            if any(word in e.stderr for word in ("rejected", "non-fast-forward", "fetch first")):
                return None  # the branch moved under us: start again from its new head
            raise
        return PublishResult(commit_sha=commit, files=change.files, unchanged=False,
                             remote=self.remote, branch=change.branch)


def is_local_path(remote: str) -> bool:
    """Whether ``remote`` names a folder on this machine rather than a URL."""
    return "://" not in remote and not (":" in remote.split("/", 1)[0] and "@" in remote)


def init_bare_remote(path: Path, branch: str = "main") -> bool:
    """Create a bare repository at ``path`` whose ``branch`` holds one README commit.

    Args:
        path: Where; nothing happens when a repository is already there.
        branch: The target branch merge requests go to.

    Returns:
        True when it was created, False when it existed.
    """
    if (path / "HEAD").exists():
        return False
    env = {**os.environ, "GIT_AUTHOR_NAME": "tfgen", "GIT_AUTHOR_EMAIL": "tfgen@localhost",
           "GIT_COMMITTER_NAME": "tfgen", "GIT_COMMITTER_EMAIL": "tfgen@localhost"}

    def git(*args: str, stdin: str | None = None) -> str:
        return subprocess.run(["git", *args], input=stdin, capture_output=True, text=True,
                              env=env, check=True).stdout.strip()

    path.parent.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "--bare", "-b", branch, str(path))
    blob = git("--git-dir", str(path), "hash-object", "-w", "--stdin",
               stdin="# infrastructure\n\nTerraform that tfgen writes lands here.\n")
    tree = git("--git-dir", str(path), "mktree", stdin=f"100644 blob {blob}\tREADME.md\n")
    commit = git("--git-dir", str(path), "commit-tree", tree, stdin="Initial commit\n")
    git("--git-dir", str(path), "update-ref", f"refs/heads/{branch}", commit)
    return True
