"""The deployment artefacts: the template's least privilege, and containers that match the
local path (images cannot be built here, so their consistency is checked instead)."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SERVICES = ["ingest", "chunker", "detector", "aggregator", "notifier"]


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader, tag_suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {tag_suffix: value}


_CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict:
    return yaml.load((REPO / "deploy" / "template.yaml").read_text(), Loader=_CfnLoader)


def _statements(template, role):
    policies = template["Resources"][role]["Properties"]["Policies"]
    return [st for p in policies for st in p["PolicyDocument"]["Statement"]]


def _listify(x):
    return x if isinstance(x, list) else [x]


def test_cfn_lint_passes():
    lint = shutil.which("cfn-lint", path=str(REPO / ".venv" / "bin")) or shutil.which("cfn-lint")
    assert lint, "cfn-lint is a dev dependency (uv sync installs it)"
    result = subprocess.run([lint, str(REPO / "deploy" / "template.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_task_roles_have_no_wildcards(template, service):
    for st in _statements(template, f"{service.capitalize()}TaskRole"):
        for action in _listify(st["Action"]):
            assert action != "*" and not action.endswith(":*"), (service, action)
        for resource in _listify(st["Resource"]):
            assert resource != "*", (service, st)


@pytest.mark.parametrize("service", SERVICES)
def test_each_role_reaches_only_its_own_queue(template, service):
    """And the stages that work on a recording may look into their own dead-letter queue (for
    letters a killed worker could not announce), without deleting from it."""
    name = service.capitalize()
    queues: dict[str, set[str]] = {}
    for st in _statements(template, f"{name}TaskRole"):
        for a in _listify(st["Action"]):
            if a.startswith("sqs:"):
                for r in _listify(st["Resource"]):
                    queues.setdefault(str(r), set()).add(a)
    own, dead = str({"GetAtt": f"{name}Queue.Arn"}), str({"GetAtt": f"{name}DeadLetterQueue.Arn"})
    assert own in queues
    if service in ("chunker", "detector", "aggregator"):
        assert set(queues) == {own, dead} and queues[dead] == {"sqs:ReceiveMessage", "sqs:GetQueueUrl"}
    else:
        assert set(queues) == {own}


def _resources(template, service, prefix):
    return [(a, str(r)) for st in _statements(template, f"{service.capitalize()}TaskRole")
            for a in _listify(st["Action"]) if a.startswith(prefix) for r in _listify(st["Resource"])]


def test_notifier_cannot_read_raw_data_and_detector_cannot_email(template):
    for action, resource in _resources(template, "notifier", "s3:"):
        assert "UploadBucket" not in resource and "recordings/" not in resource, (action, resource)
    for service in ("ingest", "chunker", "detector", "aggregator"):
        assert _resources(template, service, "sns:") == []
    assert _resources(template, "detector", "s3:") and all(
        "UploadBucket" not in r for _, r in _resources(template, "detector", "s3:"))


def test_every_queue_has_a_dead_letter_queue_and_an_alarm(template):
    res = template["Resources"]
    for service in SERVICES:
        q = res[f"{service.capitalize()}Queue"]["Properties"]
        assert q["RedrivePolicy"]["deadLetterTargetArn"] == {"GetAtt": f"{service.capitalize()}DeadLetterQueue.Arn"}
        alarm = res[f"{service.capitalize()}DeadLetterAlarm"]["Properties"]
        assert alarm["Dimensions"][0]["Value"] == {"GetAtt": f"{service.capitalize()}DeadLetterQueue.QueueName"}


def test_buckets_are_private_encrypted_and_tls_only(template):
    res = template["Resources"]
    for bucket in ("UploadBucket", "DataBucket"):
        props = res[bucket]["Properties"]
        assert all(props["PublicAccessBlockConfiguration"].values())
        assert props["BucketEncryption"]
        policy = res[f"{bucket}Policy"]["Properties"]["PolicyDocument"]["Statement"][0]
        assert policy["Effect"] == "Deny" and policy["Condition"]["Bool"]["aws:SecureTransport"] == "false"
    rules = {r["Id"]: r for r in res["UploadBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["processed-raw-to-deep-archive"]["Transitions"][0]["StorageClass"] == "DEEP_ARCHIVE"


def test_detector_scales_to_zero_on_backlog(template):
    res = template["Resources"]
    assert res["DetectorScalableTarget"]["Properties"]["MinCapacity"] == 0
    metrics = res["DetectorBacklogPerTask"]["Properties"]["TargetTrackingScalingPolicyConfiguration"][
        "CustomizedMetricSpecification"]["Metrics"]
    assert any("Expression" in m for m in metrics)
    strategy = res["DetectorService"]["Properties"]["CapacityProviderStrategy"]
    assert {s["CapacityProvider"] for s in strategy} == {"FARGATE_SPOT", "FARGATE"}


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_matches_the_local_entrypoint(service, template):
    dockerfile = (REPO / "services" / service / "Dockerfile").read_text()
    cmd = re.search(r'^CMD \["python", "-m", "([a-z_]+)"\]', dockerfile, re.M).group(1)
    assert cmd == f"neurocyte_{service}"
    importlib.import_module(cmd)
    assert (REPO / "services" / service / f"neurocyte_{service}" / "__main__.py").exists()
    for src in re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.M):
        assert (REPO / src).exists(), f"{service}/Dockerfile copies {src}, which does not exist"
    assert "USER neurocyte" in dockerfile and "HEALTHCHECK" in dockerfile
    container = template["Resources"][f"{service.capitalize()}TaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert container["Command"] == ["python", "-m", cmd]


def test_compose_and_ecs_give_services_the_variables_the_code_reads(template):
    from neurocyte_shared.messaging.config import Settings

    required = Settings.required()
    assert "NEUROCYTE_QUEUE_URL" in required
    compose = yaml.safe_load((REPO / "docker-compose.localstack.yml").read_text())
    for service in SERVICES:
        env = compose["services"][service]["environment"]
        assert required <= set(env), (service, required - set(env))
        ecs_env = {e["Name"] for e in template["Resources"][f"{service.capitalize()}TaskDefinition"]
                   ["Properties"]["ContainerDefinitions"][0]["Environment"]}
        assert required <= ecs_env, (service, required - ecs_env)
    assert "NEUROCYTE_TOPIC_ARN" in {e["Name"] for e in template["Resources"]["NotifierTaskDefinition"]
                                     ["Properties"]["ContainerDefinitions"][0]["Environment"]}
