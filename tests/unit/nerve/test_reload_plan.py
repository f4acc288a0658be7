"""What a SIGHUP does to each service (nerve/reload_plan.py, pure): a check edit that comes
with a record or registry change keeps the checks' verdict (only checks that moved with the
address start over), and a service renamed at the same placement keeps its registration."""

from __future__ import annotations

from typing import Any

import pytest

from nerve.config import ServiceConfig
from nerve.reload_plan import Step, plan_reload, probes_moved

HTTP = {"type": "http", "uri": "/health", "timeout": 0.5, "rise": 3, "fall": 2}


def service(check: dict[str, Any] | None = None, **changes: Any) -> ServiceConfig:
    block: dict[str, Any] = {
        "host": "127.0.0.1", "port": 8080, "weight": 10, "check_interval": 0.5,
        "zk_hosts": ["127.0.0.1:2181"], "zk_path": "/web", "zk_session_timeout": 5,
        "checks": [{**HTTP, **(check or {})}],
    }  # fmt: skip
    return ServiceConfig.model_validate({**block, **changes})


def one_step(old: ServiceConfig, new: ServiceConfig, new_id: str = "i-1") -> Step:
    plan = plan_reload("i-1", {"web": old}, new_id, {"web": new})
    assert plan.removed == ()
    [step] = plan.steps
    return step


CHECK_EDITS = [
    {"timeout": 0.8},
    {"rise": 4},
    {"fall": 3},
    {"uri": "/ready"},
    {"headers": {"X-A": "1"}},
    {"type": "tcp", "uri": None},
    {"port": 9000},  # the check probes another port; the registered address stays
]


@pytest.mark.parametrize("check", CHECK_EDITS)
@pytest.mark.parametrize(
    "changes, kind",
    [
        ({"weight": 20}, "record"),
        ({"labels": {"zone": "az1"}}, "record"),
        ({"haproxy_server_options": "backup"}, "record"),
        ({"zk_session_timeout": 6}, "registry"),
        ({"zk_path": "/web2"}, "registry"),
    ],
)
def test_a_check_edit_with_a_record_or_registry_change_keeps_the_verdict(
    check: dict[str, Any], changes: dict[str, Any], kind: str
) -> None:
    step = one_step(service(), service(check, **changes))
    assert (step.change, step.keeps_verdict, step.outcome) == (kind, True, "re_registered")


@pytest.mark.parametrize("check", CHECK_EDITS)
def test_a_check_edit_with_a_new_instance_id_keeps_the_verdict(check: dict[str, Any]) -> None:
    step = one_step(service(), service(check), new_id="i-2")
    assert (step.change, step.keeps_verdict) == ("record", True)


def test_a_check_edit_with_another_registry_type_keeps_the_verdict() -> None:
    etcd = {"reporter_type": "etcd", "etcd_endpoints": ["127.0.0.1:2379"], "etcd_path": "/web"}
    step = one_step(service(), service({"timeout": 0.8}, zk_hosts=None, zk_path=None, **etcd))
    assert (step.change, step.keeps_verdict) == ("registry", True)


def test_checks_that_follow_a_moved_address_start_over() -> None:
    """A check without `port` probes the service's new port: nothing vouches for it yet
    (``moved``: the old registration stays meanwhile, nerve/handover.py)."""
    step = one_step(service(), service(port=8081))
    assert (step.change, step.keeps_verdict, step.moved) == ("record", False, True)
    assert one_step(service(), service(host="127.0.0.2")).moved
    assert one_step(service(), service({"timeout": 0.8}, port=8081, weight=20)).moved
    assert not one_step(service(), service(weight=20)).moved


def test_a_moved_address_whose_checks_probe_where_they_did_keeps_the_verdict() -> None:
    """The checks name their port (an admin port, say): they probe what they probed."""
    old = service({"port": 9000})
    step = one_step(old, service({"port": 9000, "uri": "/ready"}, port=8081))
    assert step.keeps_verdict and not step.moved
    assert not one_step(old, service({"port": 9001}, port=8081)).keeps_verdict


def test_mocked_checks_probe_nothing() -> None:
    mocked = service(check_mocked=True)
    assert not probes_moved(mocked, service(check_mocked=True, port=8081))
    assert probes_moved(mocked, service({"port": 8080}, port=8081))  # now really probed
    assert not probes_moved(mocked, service(check_mocked=False, weight=20))  # same address


def test_the_changes_that_keep_the_registration_where_it_is() -> None:
    assert one_step(service(), service()).change == "unchanged"
    step = one_step(service(), service({"timeout": 0.8}, check_interval=1))
    assert (step.change, step.keeps_verdict, step.outcome) == ("checks", True, "checks_changed")


def test_a_service_renamed_at_the_same_placement_continues_the_old_one() -> None:
    old = {"web": service(), "api": service(port=8081, zk_path="/api")}
    new = {"web_main": service({"rise": 5}), "api": old["api"]}
    plan = plan_reload("i-1", old, "i-1", new)
    assert plan.removed == ()
    renamed, api = plan.steps
    assert (renamed.name, renamed.previous, renamed.change) == ("web_main", "web", "renamed")
    assert renamed.keeps_verdict and renamed.outcome == "renamed"
    assert (api.change, api.previous) == ("unchanged", "api")


@pytest.mark.parametrize(
    "new_id, changes",
    [
        ("i-1", {"weight": 20}),  # another record
        ("i-1", {"zk_path": "/web2"}),  # another place
        ("i-2", {}),  # another instance: another node
    ],
)
def test_a_new_name_at_another_placement_is_a_removal_and_an_addition(
    new_id: str, changes: dict[str, Any]
) -> None:
    plan = plan_reload("i-1", {"web": service()}, new_id, {"web_main": service(**changes)})
    assert plan.removed == ("web",)
    [added] = plan.steps
    assert (added.name, added.change, added.previous) == ("web_main", "added", None)


def test_one_removed_service_continues_as_one_added_service_at_most() -> None:
    """Two new names at one placement (the second is refused as a duplicate at build)."""
    plan = plan_reload("i-1", {"web": service()}, "i-1", {"a": service(), "b": service()})
    assert [(s.name, s.change, s.previous) for s in plan.steps] == [
        ("a", "renamed", "web"),
        ("b", "added", None),
    ]
    assert plan.removed == ()


@pytest.mark.parametrize(
    "before, after",
    [({"canary": 1}, {"canary": True}), ({"tier": 1.0}, {"tier": 1}), ({"on": False}, {"on": 0}),
     ({"roles": [1]}, {"roles": [True]}), ({"meta": {"n": 1}}, {"meta": {"n": 1.0}})],
)  # fmt: skip
def test_a_label_edit_python_calls_equal_rewrites_the_record(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    # nerve writes label values as configured (4908bdc): True == 1 == 1.0 in Python, but the
    # records differ, and Ruby synapse's label_filters tell them apart (review cr36-airbnb:
    # the SIGHUP was "unchanged" and the znode kept the old value).
    step = one_step(service(labels=before), service(labels=after))
    assert (step.change, step.outcome) == ("record", "re_registered")


def test_labels_in_another_order_are_no_change() -> None:
    old, new = service(labels={"a": 1, "b": True}), service(labels={"b": True, "a": 1})
    assert one_step(old, new).change == "unchanged"
