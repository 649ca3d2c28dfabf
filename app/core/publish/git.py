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
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from app.core.locks import LocalLocks, LockFactory
from app.core.model import Change, PublishResult
from app.errors import GitLabNotFound, GitLabUnavailable

__all__ = ["GitError", "GitPublisher"]

class GitError(RuntimeError):
    """A git command failed; ``stderr`` holds its message."""

    def __init__(self, args: list[str], stderr: str) -> None:
        super().__init__(f"git {' '.join(args[:2])}: {stderr.strip()[:500]}")
        self.stderr = stderr


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
        self.remote = remote
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
            GitLabNotFound: The remote does not exist.
            GitLabUnavailable: The remote did not answer, or the push kept losing races.
        """
        with self.lock_factory(f"git:{self.remote}:{change.branch}", change.job_uuid), \
                tempfile.TemporaryDirectory(prefix="tfgen-git-") as tmp:
            repo = Path(tmp)
            try:
                self._git(repo, "init", "-q", "--bare")
                self._git(repo, "remote", "add", "origin", self.remote)
                for _ in range(self.push_attempts):
                    result = self._attempt(repo, change)
                    if result is not None:
                        return result
            except GitError as e:
                if "does not appear to be a git repository" in e.stderr or \
                        "not found" in e.stderr.lower():
                    raise GitLabNotFound(f"git remote not found: {self.remote}") from e
                raise GitLabUnavailable(f"git remote failed: {e}") from e
            except subprocess.TimeoutExpired as e:
                raise GitLabUnavailable("git remote timed out") from e
        raise GitLabUnavailable(f"branch {change.branch} kept moving; gave up after "
                                f"{self.push_attempts} attempts")

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
            own = f"Tfgen-Job: {change.job_uuid}" in message
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
