"""docker-py (the Python `docker` SDK) against a per-test shoal.

Run by `cargo test --test compat_docker_py` (which passes SHOAL_BIN) when the
venv `.venv` has the `docker` package (`.ci/run` makes it):

    python3 -m venv .venv && .venv/bin/pip install docker
    SHOAL_BIN=target/debug/shoal .venv/bin/python -m unittest discover -s tests/docker_py -v
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

import docker
from docker import errors

ENGINE = os.environ.get("SHOAL_TEST_ENGINE", "unix:///var/run/docker.sock")
SHOAL_BIN = os.environ.get("SHOAL_BIN", "target/debug/shoal")
NOT_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or '
    '"docker swarm join" to connect this node to swarm and try again.'
)


class Shoal:
    """One shoal on its own socket and data dir, in front of the engine."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="shoal-dockerpy-")
        self.sock = os.path.join(self.dir, "shoal.sock")
        self.log = open(os.path.join(self.dir, "shoal.log"), "wb")
        self.proc = subprocess.Popen(
            [SHOAL_BIN, "-H", "unix://" + self.sock, "--engine", ENGINE,
             "--data-dir", os.path.join(self.dir, "data")],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.sock)
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("shoal did not start: " + self.logs())
                time.sleep(0.02)
        self.client = docker.DockerClient(base_url="unix://" + self.sock, version="1.41")

    def logs(self):
        with open(os.path.join(self.dir, "shoal.log"), "rb") as f:
            return f.read().decode(errors="replace")[-4000:]

    def close(self):
        node_id = ""
        try:
            node_id = self.client.info()["Swarm"]["NodeID"]
        except Exception:
            pass
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        if node_id:
            # Remove the task containers this shoal ran on the engine.
            engine = docker.APIClient(base_url=ENGINE)
            for c in engine.containers(
                    all=True, filters={"label": "com.docker.swarm.node.id=" + node_id}):
                try:
                    engine.remove_container(c["Id"], force=True, v=True)
                except errors.NotFound:
                    pass  # shoal's agent removed it first
        shutil.rmtree(self.dir, ignore_errors=True)


class SwarmTest(unittest.TestCase):
    def setUp(self):
        self.shoal = Shoal()
        self.client = self.shoal.client

    def tearDown(self):
        self.shoal.close()

    def init(self):
        return self.client.swarm.init(advertise_addr="127.0.0.1")

    def test_calls_before_init_get_503(self):
        with self.assertRaises(errors.APIError) as cm:
            self.client.nodes.list()
        self.assertEqual(cm.exception.status_code, 503)
        self.assertEqual(cm.exception.explanation, NOT_MANAGER)
        with self.assertRaises(errors.APIError) as cm:
            self.client.services.list()
        self.assertEqual(cm.exception.status_code, 503)
        self.assertEqual(self.client.info()["Swarm"]["LocalNodeState"], "inactive")

    def test_swarm_init_inspect_update_leave(self):
        node_id = self.init()
        self.assertEqual(len(node_id), 25)
        self.client.swarm.reload()
        attrs = self.client.swarm.attrs
        self.assertEqual(attrs["Spec"]["Name"], "default")
        self.assertTrue(attrs["JoinTokens"]["Worker"].startswith("SWMTKN-1-"))
        self.client.swarm.update(task_history_retention_limit=3)
        self.client.swarm.reload()
        self.assertEqual(
            self.client.swarm.attrs["Spec"]["Orchestration"]["TaskHistoryRetentionLimit"], 3)
        info = self.client.info()["Swarm"]
        self.assertEqual(info["LocalNodeState"], "active")
        self.assertEqual(info["NodeID"], node_id)
        with self.assertRaises(errors.APIError) as cm:
            self.init()
        self.assertEqual(cm.exception.status_code, 503)
        self.assertTrue(self.client.swarm.leave(force=True))
        self.assertEqual(self.client.info()["Swarm"]["LocalNodeState"], "inactive")

    def test_nodes(self):
        node_id = self.init()
        nodes = self.client.nodes.list()
        self.assertEqual([n.id for n in nodes], [node_id])
        node = self.client.nodes.get(node_id)
        self.assertEqual(node.attrs["Spec"]["Role"], "manager")
        self.assertEqual(node.attrs["ManagerStatus"]["Leader"], True)
        spec = dict(node.attrs["Spec"])
        spec["Labels"] = {"env": "test"}
        self.assertTrue(node.update(spec))
        node.reload()
        self.assertEqual(node.attrs["Spec"]["Labels"], {"env": "test"})
        self.assertEqual(len(self.client.nodes.list(filters={"role": "manager"})), 1)
        self.assertEqual(self.client.nodes.list(filters={"role": "worker"}), [])
        with self.assertRaises(errors.NotFound):
            self.client.nodes.get("nosuchnode")

    def test_services_create_ls_inspect_rm(self):
        self.init()
        svc = self.client.services.create(
            "busybox:latest", ["sleep", "3600"], name="dp-web",
            mode=docker.types.ServiceMode("replicated", replicas=1),
            stop_grace_period=1_000_000_000)
        self.assertEqual(len(svc.id), 25)
        self.assertEqual([s.name for s in self.client.services.list()], ["dp-web"])
        got = self.client.services.get("dp-web")
        self.assertEqual(got.id, svc.id)
        self.assertEqual(got.attrs["Spec"]["Mode"], {"Replicated": {"Replicas": 1}})
        self.assertEqual(
            got.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"], "busybox:latest")
        # docker-py sends the legacy list form of filters.
        self.assertEqual(len(self.client.services.list(filters={"name": ["dp-"]})), 1)
        deadline = time.time() + 60
        while time.time() < deadline:
            states = [t["Status"]["State"] for t in got.tasks()]
            if "running" in states:
                break
            time.sleep(0.2)
        self.assertIn("running", states)
        self.assertTrue(got.remove())
        self.assertEqual(self.client.services.list(), [])

    def wait_for(self, what, check, timeout=60):
        """Polls `check` until it returns something true; fails with `what`."""
        deadline = time.time() + timeout
        while True:
            got = check()
            if got:
                return got
            if time.time() > deadline:
                self.fail("timed out waiting for " + what)
            time.sleep(0.2)

    def running(self, service):
        return [t for t in service.tasks() if t["Status"]["State"] == "running"]

    # docker-py spells keys as the engine's Go decoder accepts them, not as
    # the API does: {"replicated": {...}}, {"global": {}}, "Healthcheck".
    def test_lower_case_modes_are_read_as_the_engine_reads_them(self):
        self.init()
        rep = self.client.services.create(
            "busybox:latest", ["sleep", "3600"], name="dp-five",
            mode=docker.types.ServiceMode("replicated", replicas=5),
            stop_grace_period=1_000_000_000)
        rep.reload()
        self.assertEqual(rep.attrs["Spec"]["Mode"], {"Replicated": {"Replicas": 5}})
        self.wait_for("5 running replicas", lambda: len(self.running(rep)) == 5)
        glob = self.client.services.create(
            "busybox:latest", ["sleep", "3600"], name="dp-global",
            mode=docker.types.ServiceMode("global"), stop_grace_period=1_000_000_000)
        glob.reload()
        self.assertEqual(glob.attrs["Spec"]["Mode"], {"Global": {}})
        self.wait_for("the global task running", lambda: len(self.running(glob)) == 1)
        self.assertEqual(
            [s.attrs["Spec"]["Mode"] for s in self.client.services.list(filters={"mode": "global"})],
            [{"Global": {}}])

    def test_healthcheck_and_rollback_config_are_kept(self):
        self.init()
        svc = self.client.services.create(
            "busybox:latest", ["sleep", "3600"], name="dp-health",
            healthcheck=docker.types.Healthcheck(
                test=["CMD", "true"], interval=1_000_000_000, retries=3),
            rollback_config={"order": "start-first", "parallelism": 2},
            update_config=docker.types.UpdateConfig(parallelism=1, order="start-first"),
            stop_grace_period=1_000_000_000)
        svc.reload()
        spec = svc.attrs["Spec"]
        # The engine writes its Go field name, Healthcheck (the spec says HealthCheck).
        self.assertEqual(spec["TaskTemplate"]["ContainerSpec"]["Healthcheck"],
                         {"Test": ["CMD", "true"], "Interval": 1_000_000_000, "Retries": 3})
        # As the engine reads it back: its zero values and enum defaults written.
        self.assertEqual(spec["RollbackConfig"], {"Parallelism": 2, "FailureAction": "pause",
                                                  "MaxFailureRatio": 0, "Order": "start-first"})
        self.assertEqual(spec["UpdateConfig"]["Order"], "start-first")

    def test_privileges_are_kept_and_read_back_as_the_engine_writes_them(self):
        self.init()
        svc = self.client.services.create(
            "busybox:latest", ["sleep", "3600"], name="dp-priv",
            privileges=docker.types.Privileges(selinux_disable=True),
            stop_grace_period=1_000_000_000)
        svc.reload()
        # Go writes every field of these structs (no omitempty).
        self.assertEqual(
            svc.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Privileges"],
            {"CredentialSpec": None,
             "SELinuxContext": {"Disable": True, "User": "", "Role": "", "Type": "", "Level": ""}})
        self.wait_for("the task running", lambda: len(self.running(svc)) == 1)

    def test_config_with_lower_case_templating_is_accepted(self):
        self.init()
        config = self.client.configs.create(
            name="dp-tpl", data=b"hello {{.Service.Name}}", templating={"name": "golang"})
        config.reload()
        self.assertEqual(config.attrs["Spec"]["Templating"], {"Name": "golang"})
        self.assertEqual(config.name, "dp-tpl")

    def test_service_errors(self):
        self.init()
        self.client.services.create("busybox:latest", ["sleep", "3600"], name="dp-dup",
                                    stop_grace_period=1_000_000_000)
        with self.assertRaises(errors.APIError) as cm:
            self.client.services.create("busybox:latest", ["sleep", "3600"], name="dp-dup")
        self.assertEqual(cm.exception.status_code, 409)
        with self.assertRaises(errors.NotFound) as cm:
            self.client.services.get("nosuch")
        self.assertEqual(cm.exception.explanation, "service nosuch not found")
        with self.assertRaises(errors.APIError) as cm:
            self.client.api.update_service("dp-dup", version=1,
                                           task_template={"ContainerSpec": {"Image": "busybox:latest"}},
                                           name="dp-dup")
        self.assertEqual(cm.exception.status_code, 500)
        self.assertIn("update out of sequence", cm.exception.explanation)


if __name__ == "__main__":
    unittest.main()
