"""The local stack: LocalStack on the host (no Docker) plus the five services as processes.

State (pid files, logs, LocalStack's data) lives in NEUROCYTE_HOME (default ~/.neurocyte);
the endpoint in NEUROCYTE_ENDPOINT (default http://127.0.0.1:4566), so a test run can keep
its own stack beside a developer's.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import requests

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "template.yaml"
LOCALSTACK_REQUIREMENTS = REPO / "deploy" / "localstack" / "requirements-host.txt"
LOCALSTACK_VENV = Path(os.environ.get("NEUROCYTE_LOCALSTACK_VENV", REPO / ".localstack-venv"))
SERVICES = ("ingest", "chunker", "detector", "aggregator", "notifier")


class LocalStackError(RuntimeError):
    pass


@dataclass(frozen=True)
class Local:
    home: Path
    endpoint: str
    stack: str

    @classmethod
    def from_env(cls) -> Local:
        return cls(
            home=Path(os.environ.get("NEUROCYTE_HOME", Path.home() / ".neurocyte")),
            endpoint=os.environ.get("NEUROCYTE_ENDPOINT", "http://127.0.0.1:4566"),
            stack=os.environ.get("NEUROCYTE_STACK", "neurocyte"),
        )

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def pids(self) -> Path:
        return self.home / "pids"

    def aws_env(self) -> dict[str, str]:
        """Credentials and endpoint for LocalStack (any key works; region fixed)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def use(self) -> None:
        """Point this process's boto3 at the local stack."""
        os.environ.update(self.aws_env())


# ---------------------------------------------------------------------------------------
# LocalStack


def find_python313() -> str:
    candidates = [os.environ.get("NEUROCYTE_PYTHON313", ""), shutil.which("python3.13") or ""]
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=10).stdout.strip()
        candidates += sorted(glob.glob(f"{root}/versions/3.13*/bin/python"), reverse=True)
    except (OSError, subprocess.SubprocessError):
        pass
    # pyenv's usual home, for shells where pyenv itself is not on PATH
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.13*/bin/python")), reverse=True)
    for c in candidates:
        if c and subprocess.run([c, "-c", "import sys; assert sys.version_info[:2] == (3, 13)"],
                                capture_output=True).returncode == 0:
            return c
    raise LocalStackError(
        "LocalStack needs Python 3.13 and none was found. Install it (e.g. `pyenv install 3.13.0`) "
        "or set NEUROCYTE_PYTHON313=/path/to/python3.13. With Docker, use "
        "`docker compose -f docker-compose.localstack.yml up` instead."
    )


def ensure_localstack_installed(say=print) -> Path:
    python = LOCALSTACK_VENV / "bin" / "python"
    stamp = LOCALSTACK_VENV / ".requirements"
    wanted = LOCALSTACK_REQUIREMENTS.read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    say(f"Installing LocalStack (pinned, {LOCALSTACK_REQUIREMENTS.relative_to(REPO)}) into {LOCALSTACK_VENV} ...")
    py313 = find_python313()
    uv = shutil.which("uv") or str(REPO / ".tools" / "bin" / "uv")
    if Path(uv).exists():
        subprocess.run([uv, "venv", "-q", "--allow-existing", "-p", py313, str(LOCALSTACK_VENV)], check=True)
        subprocess.run([uv, "pip", "install", "-q", "-p", str(python), "-r", str(LOCALSTACK_REQUIREMENTS)],
                       check=True)
    else:
        subprocess.run([py313, "-m", "venv", str(LOCALSTACK_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(LOCALSTACK_REQUIREMENTS)],
                       check=True)
    stamp.write_text(wanted)
    return python


def localstack_healthy(local: Local) -> bool:
    try:
        r = requests.get(f"{local.endpoint}/_localstack/health", timeout=2)
        services = r.json().get("services", {})
        return r.ok and all(services.get(s) in ("available", "running")
                            for s in ("s3", "sqs", "sns", "events", "cloudformation"))
    except (requests.RequestException, ValueError):
        return False


# LocalStack makes its TLS certificate with pyOpenSSL's X509.add_extensions, which the pinned
# pyOpenSSL no longer has; it skips that step when a certificate file exists, so we make one
# (self-signed, with the modern `cryptography` API) before the first start.
_MAKE_CERT = """
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
import ipaddress
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=730))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256()))
with open(sys.argv[1], "wb") as f:
    f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()))
    f.write(cert.public_bytes(serialization.Encoding.PEM))
"""


def _certificate(python: Path, folder: Path) -> Path:
    pem = folder / "server.test.pem"
    if not pem.exists():
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(python), "-c", _MAKE_CERT, str(pem)], check=True)
    return pem


def start_localstack(local: Local, say=print, timeout_s: float = 180) -> None:
    if localstack_healthy(local):
        say(f"LocalStack already running at {local.endpoint}")
        return
    python = ensure_localstack_installed(say)
    host = urlparse(local.endpoint)
    listen = f"{host.hostname}:{host.port or 4566}"
    data = local.home / "localstack"
    data.mkdir(parents=True, exist_ok=True)
    local.logs.mkdir(parents=True, exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NEUROCYTE_"))},
        "GATEWAY_LISTEN": listen,
        "LOCALSTACK_HOST": listen,
        "SQS_ENDPOINT_STRATEGY": "path",  # queue URLs on 127.0.0.1: no DNS needed
        "FILESYSTEM_ROOT": str(data),
        "SKIP_SSL_CERT_DOWNLOAD": "1",
        "DISABLE_EVENTS": "1",
        # Check pre-signed URLs as AWS does (LocalStack skips it by default), so a report link
        # opens its one object until it expires, and nothing else.
        "S3_SKIP_SIGNATURE_VALIDATION": "0",
        "SERVICES": "s3,sqs,sns,events,ses,cloudformation,sts",
        "CUSTOM_SSL_CERT_PATH": str(_certificate(python, local.home / "cert")),
    }
    say(f"Starting LocalStack at {local.endpoint} (log: {local.logs / 'localstack.log'}) ...")
    with open(local.logs / "localstack.log", "ab") as log:
        proc = subprocess.Popen([str(python), "-m", "localstack.runtime.main"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=data)
    _write_pid(local, "localstack", proc.pid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalStackError(f"LocalStack exited with status {proc.returncode}; see "
                                  f"{local.logs / 'localstack.log'}")
        if localstack_healthy(local):
            return
        time.sleep(0.5)
    raise LocalStackError(f"LocalStack did not become healthy within {timeout_s:.0f} s; see "
                          f"{local.logs / 'localstack.log'}")


# ---------------------------------------------------------------------------------------
# The stack (deploy/template.yaml) and the service processes


def deploy_stack(local: Local, say=print) -> dict[str, str]:
    from neurocyte_shared.messaging import aws

    local.use()
    cfn = aws.client("cloudformation")
    body = TEMPLATE.read_text()
    try:
        cfn.describe_stacks(StackName=local.stack)
        exists = True
    except Exception:  # noqa: BLE001 - "does not exist" is a ClientError with a 400
        exists = False
    if not exists:
        say(f"Provisioning stack {local.stack} from {TEMPLATE.relative_to(REPO)} ...")
        cfn.create_stack(StackName=local.stack, TemplateBody=body,
                         Parameters=[{"ParameterKey": "WebOrigin", "ParameterValue": web_url()}])
        cfn.get_waiter("stack_create_complete").wait(StackName=local.stack,
                                                     WaiterConfig={"Delay": 1, "MaxAttempts": 300})
    return stack_outputs(local)


def stack_outputs(local: Local) -> dict[str, str]:
    from neurocyte_shared.messaging import aws

    local.use()
    stacks = aws.client("cloudformation").describe_stacks(StackName=local.stack)["Stacks"]
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def service_env(local: Local, outputs: dict[str, str], service: str) -> dict[str, str]:
    """The environment a service process gets: the same variables as its container."""
    return {
        **os.environ,
        **local.aws_env(),
        "NEUROCYTE_QUEUE_URL": outputs[f"{service.capitalize()}QueueUrl"],
        "NEUROCYTE_EVENT_BUS": outputs["EventBusName"],
        "NEUROCYTE_UPLOAD_BUCKET": outputs["UploadBucketName"],
        "NEUROCYTE_DATA_BUCKET": outputs["DataBucketName"],
        "NEUROCYTE_TOPIC_ARN": outputs["NotificationTopicArn"],
        "NEUROCYTE_LOG_FORMAT": "json",
        "NEUROCYTE_SNS_DELIVERS_UNCONFIRMED": "1",  # LocalStack: see the notifier's Deps
    }


def web_port() -> int:
    return int(os.environ.get("NEUROCYTE_WEB_PORT", "8080"))


def web_url() -> str:
    return f"http://127.0.0.1:{web_port()}"


def web_env(local: Local, outputs: dict[str, str]) -> dict[str, str]:
    """The web front-end's environment. Its signing key is made once per NEUROCYTE_HOME and
    kept there (mode 600), so sessions survive a restart of the local stack."""
    key = local.home / "web-secret"
    if not key.exists():
        import secrets

        local.home.mkdir(parents=True, exist_ok=True)
        key.touch(mode=0o600)
        key.write_text(secrets.token_urlsafe(48))
    return {**os.environ, **local.aws_env(), "NEUROCYTE_UPLOAD_BUCKET": outputs["UploadBucketName"],
            "NEUROCYTE_EVENT_BUS": outputs["EventBusName"],
            "NEUROCYTE_DATA_BUCKET": outputs["DataBucketName"], "NEUROCYTE_WEB_SECRET": key.read_text().strip(),
            "NEUROCYTE_WEB_PORT": str(web_port()), "NEUROCYTE_WEB_BASE_URL": web_url(),
            "NEUROCYTE_LOG_FORMAT": "json"}


def start_services(local: Local, outputs: dict[str, str], detectors: int = 2, say=print) -> None:
    local.logs.mkdir(parents=True, exist_ok=True)
    for service in SERVICES:
        for i in range(detectors if service == "detector" else 1):
            name = f"{service}-{i}"
            if _alive(_read_pid(local, name)):
                continue
            with open(local.logs / f"{name}.log", "ab") as log:
                proc = subprocess.Popen([sys.executable, "-m", f"neurocyte_{service}"],
                                        env=service_env(local, outputs, service), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            _write_pid(local, name, proc.pid)
    if not _alive(_read_pid(local, "web-0")):
        with open(local.logs / "web-0.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "neurocyte_web"], env=web_env(local, outputs), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        _write_pid(local, "web-0", proc.pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(web_url() + "/signin", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None:
                raise LocalStackError(f"the web front-end stopped at start (see {local.logs / 'web-0.log'})")
            time.sleep(0.2)
    say(f"Services running: {', '.join(SERVICES)} ({detectors} detector workers), web; logs in {local.logs}")
    say(f"Web: {web_url()}")


def stop_all(local: Local, say=print, timeout_s: float = 30) -> None:
    if not local.pids.exists():
        say("Nothing is running.")
        return
    # Services first (they finish the message in hand), LocalStack last.
    files = sorted(local.pids.glob("*.pid"), key=lambda p: p.stem == "localstack")
    for group in ([p for p in files if p.stem != "localstack"], [p for p in files if p.stem == "localstack"]):
        procs = [(p, _read_pid_file(p)) for p in group]
        for _, pid in procs:
            if _alive(pid):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(_alive(pid) for _, pid in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
        for path, pid in procs:
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
            path.unlink(missing_ok=True)
    say("Stopped.")


def running(local: Local) -> dict[str, bool]:
    if not local.pids.exists():
        return {}
    return {p.stem: _alive(_read_pid_file(p)) for p in sorted(local.pids.glob("*.pid"))}


def _write_pid(local: Local, name: str, pid: int) -> None:
    local.pids.mkdir(parents=True, exist_ok=True)
    (local.pids / f"{name}.pid").write_text(str(pid))


def _read_pid(local: Local, name: str) -> int | None:
    return _read_pid_file(local.pids / f"{name}.pid")


def _read_pid_file(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def inbox(local: Local) -> list[dict]:
    """Mail LocalStack's SES emulator has 'sent' (SNS email subscriptions end up there)."""
    r = requests.get(f"{local.endpoint}/_aws/ses", timeout=10)
    if r.status_code == 404:  # SES loads lazily: no endpoint yet means no mail yet
        return []
    r.raise_for_status()
    return r.json().get("messages", [])


def mail_to(local: Local, address: str) -> list[dict]:
    return [m for m in inbox(local)
            if address.lower() in [a.lower() for a in m.get("Destination", {}).get("ToAddresses", [])]]


def dump_json(obj) -> str:
    return json.dumps(obj, indent=1, default=str)
