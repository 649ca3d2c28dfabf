"""The stand-in itself keeps GitLab's rules (so publisher tests prove something)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.stubs.fixtures import ALICE, EVE, PROJECT, RITA
from tests.stubs.gitlab_server import P_COMMITS, GitLabStub

API = "/api/v4/projects/infra%2Fterraform"


@pytest.fixture
def http(gitlab_stub: GitLabStub) -> Iterator[Any]:
    session = requests.Session()

    def call(method: str, path: str, token: str | None = ALICE, **kwargs: Any) -> Any:
        headers = {"PRIVATE-TOKEN": token} if token else {}
        return session.request(
            method, gitlab_stub.url + API + path, headers=headers, timeout=5, **kwargs
        )

    yield call
    session.close()


def commit(branch: str, actions: list[dict[str, str]], **extra: str) -> dict[str, Any]:
    return {"branch": branch, "commit_message": "m", "actions": actions, **extra}


def create(path: str, content: str = "x") -> dict[str, str]:
    return {"action": "create", "file_path": path, "content": content}


def test_auth_rules(gitlab_stub: GitLabStub, http: Any) -> None:
    assert http("GET", "", token=None).status_code == 401
    assert http("GET", "", token="glpat-wrong").status_code == 401
    assert http("GET", "", token=EVE).json() == {"message": "404 Project Not Found"}
    bearer = {"Authorization": f"Bearer {ALICE}"}
    url = gitlab_stub.url + API
    with requests.get(url, headers=bearer, timeout=5) as answer:
        assert answer.status_code == 200
    payload = commit("f", [create("a.tf")], start_branch="main")
    assert http("POST", "/repository/commits", token=RITA, json=payload).status_code == 403


def test_commit_rules(gitlab_stub: GitLabStub, http: Any) -> None:
    def post(payload: dict[str, Any]) -> tuple[int, str]:
        answer = http("POST", "/repository/commits", json=payload)
        return answer.status_code, str(answer.json().get("message", answer.json()))

    assert post(commit("f", [create("a.tf")]))[1].startswith("You can only create")
    assert post(commit("f", [create("README.md")], start_branch="main")) == (
        400,
        "A file with this name already exists",
    )
    assert post(commit("f", [create("a.tf")], start_branch="main"))[0] == 201
    status, message = post(commit("f", [create("b.tf")], start_branch="main"))
    assert (status, message.split(".")[0]) == (400, "A branch called 'f' already exists")
    update = {"action": "update", "file_path": "nope.tf", "content": "y"}
    assert post(commit("f", [update]))[0] == 400
    stale = {"action": "update", "file_path": "a.tf", "content": "y", "last_commit_id": "0"}
    assert "changed since you started" in post(commit("f", [stale]))[1]
    answer = http("GET", "/repository/files/a.tf", params={"ref": "f"}).json()
    assert answer["content_sha256"] == (
        "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"  # sha256("x")
    )
    assert answer["last_commit_id"] == gitlab_stub.project(PROJECT).branches["f"]


def test_destructive_operations_are_refused_and_recorded(
    gitlab_stub: GitLabStub, http: Any
) -> None:
    http("POST", "/repository/commits", json=commit("f", [create("a.tf")], start_branch="main"))
    head = gitlab_stub.project(PROJECT).branches["f"]

    assert http("DELETE", "/repository/branches/f").status_code == 403
    forced = commit("f", [create("b.tf")], start_branch="main", force="true")
    assert http("POST", "/repository/commits", json=forced).status_code == 403

    assert gitlab_stub.refused == ["DELETE branch f", "force commit on f"]
    assert gitlab_stub.project(PROJECT).branches["f"] == head


def test_second_open_merge_request_is_409(gitlab_stub: GitLabStub, http: Any) -> None:
    http("POST", "/repository/commits", json=commit("f", [create("a.tf")], start_branch="main"))
    mr = {"source_branch": "f", "target_branch": "main", "title": "t"}
    assert http("POST", "/merge_requests", json=mr).status_code == 201
    second = http("POST", "/merge_requests", json=mr)
    assert second.status_code == 409
    assert second.json()["message"] == [
        "Another open merge request already exists for this source branch: !1"
    ]
    listed = http("GET", "/merge_requests", params={"source_branch": "f", "state": "opened"})
    assert [m["iid"] for m in listed.json()] == [1]


def test_lost_answer_does_the_work_and_drops_the_connection(
    gitlab_stub: GitLabStub, http: Any
) -> None:
    gitlab_stub.fail_next("lost", method="POST", pattern=P_COMMITS)
    with pytest.raises(requests.ConnectionError):
        http("POST", "/repository/commits", json=commit("f", [create("a.tf")], start_branch="main"))
    assert "f" in gitlab_stub.project(PROJECT).branches
    gitlab_stub.fail_next("reset", method="POST", pattern=P_COMMITS)
    with pytest.raises(requests.ConnectionError):
        http("POST", "/repository/commits", json=commit("g", [create("a.tf")], start_branch="main"))
    assert "g" not in gitlab_stub.project(PROJECT).branches
    gitlab_stub.fail_next("429", retry_after=2)
    limited = http("GET", "/repository/branches/f")
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "2")
