"""Real ZooKeeper 3.8 servers (standalone and ensembles) on 127.0.0.1, run with java directly.

Debian's zkServer.sh only works with /etc/zookeeper, so the JVM is started by hand with the
packaged jars; see shared/reference/infrastructure.md.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import shutil
import socket
import threading
from pathlib import Path

from kazoo.client import KazooClient, KazooState

from .process import (
    ManagedProcess,
    OneProcess,
    ServerGroup,
    free_port,
    wait_until,
)

JAVA_DIR = Path("/usr/share/java")
ZK_MAIN_STANDALONE = "org.apache.zookeeper.server.ZooKeeperServerMain"
ZK_MAIN_QUORUM = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
# A fixed heap, as ZooKeeper's admin guide advises: from a 32 MB start heap the young
# generation filled every 1-2 s under a stream of writes, each time a 2-12 ms pause on 2
# busy cores, in the tail of every write -> watcher figure. Pages are touched only as used.
JVM_OPTS = ["-Xms256m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:-UsePerfData"]
SERVING_MODES = ("standalone", "leader", "follower")

LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File={log_file}
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{{ISO8601}} [myid:%X{{myid}}] %-5p [%t] %c{{1}}: %m%n
"""


def _first_jar(patterns: list[str]) -> Path | None:
    # Prefer the unversioned symlink Debian ships, then any versioned jar (newest name last).
    for pattern in patterns:
        matches = sorted(JAVA_DIR.glob(pattern))
        if matches:
            return matches[-1]
    return None


@functools.cache
def zookeeper_classpath() -> str:
    """Classpath for the packaged ZooKeeper plus a log4j 1.2 binding for slf4j.

    zookeeper.jar's manifest pulls in its other dependencies (jute, netty, slf4j-api).
    """
    override = os.environ.get("SMARTSTACK_ZK_CLASSPATH")
    if override:
        return override
    zk = _first_jar(["zookeeper.jar", "zookeeper-3.*[0-9].jar"])
    if zk is None:
        raise FileNotFoundError(
            f"no zookeeper jar under {JAVA_DIR}; run scripts/install.sh (Debian package zookeeper)"
        )
    jars = [zk]
    binding = _first_jar(["slf4j-log4j12.jar", "slf4j-log4j12-*.jar", "slf4j-reload4j*.jar"])
    log4j = _first_jar(["log4j-1.2.jar", "log4j-1.2-*.jar", "reload4j*.jar"])
    # Without both, slf4j falls back to NOP logging: the server still runs, just silently.
    if binding and log4j:
        jars += [binding, log4j]
    return ":".join(str(j) for j in jars)


def java_binary() -> str:
    java = shutil.which("java")
    if java is None:
        raise FileNotFoundError("java not found on PATH (the zookeeper package pulls in a JRE)")
    return java


def four_letter_word(port: int, command: str, timeout: float = 1.0) -> str:
    """Send a ZooKeeper four-letter word (ruok, srvr, mntr, ...) and return the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(command.encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def server_mode(port: int, timeout: float = 1.0) -> str | None:
    """'standalone', 'leader' or 'follower' per `srvr`; None when down or not serving."""
    try:
        answer = four_letter_word(port, "srvr", timeout)
    except OSError:
        return None
    for line in answer.splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return None


def _is_ok(port: int) -> bool:
    try:
        return four_letter_word(port, "ruok") == "imok"
    except OSError:
        return False


class _ZkNode(OneProcess):
    """One ZooKeeper JVM: its directories, config and process."""

    def __init__(
        self, workdir: Path, client_port: int, name: str, jvm_args: list[str] | None = None
    ) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.client_port = client_port
        self.name = name
        self.jvm_args = list(jvm_args or [])  # e.g. -Djava.security.auth.login.config=...
        self.process: ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def gc_log(self) -> Path:
        """The JVM's GC pauses, one line each (``-Xlog:gc``)."""
        return self.workdir / "gc.log"

    def write_config(self, tick_time: int, extra: list[str]) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"tickTime={tick_time}",
            "initLimit=10",
            "syncLimit=5",
            f"dataDir={self.data_dir}",
            f"clientPort={self.client_port}",
            "clientPortAddress=127.0.0.1",
            "admin.enableServer=false",  # else Jetty takes port 8080
            "4lw.commands.whitelist=*",  # ruok/srvr for readiness
            "minSessionTimeout=1000",
            *extra,
        ]
        cfg = self.workdir / "zoo.cfg"
        cfg.write_text("\n".join(lines) + "\n")
        log4j = self.workdir / "log4j.properties"
        log4j.write_text(LOG4J_PROPERTIES.format(log_file=self.workdir / "zookeeper.log"))
        return cfg

    def start(self, main_class: str) -> None:
        cfg = self.workdir / "zoo.cfg"
        args = [
            java_binary(),
            *JVM_OPTS,
            f"-Xlog:gc:file={self.gc_log}",
            f"-Dlog4j.configuration=file:{self.workdir / 'log4j.properties'}",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-Djava.net.preferIPv4Stack=true",
            *self.jvm_args,
            "-cp",
            zookeeper_classpath(),
            main_class,
            str(cfg),
        ]
        self.process = ManagedProcess(args, self.workdir, name=self.name).start()

    def serving(self) -> bool:
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        self.process.check_alive()
        return _is_ok(self.client_port) and server_mode(self.client_port) in SERVING_MODES

    def stop(self, timeout: float) -> None:
        if self.process is not None:
            self.process.stop(timeout)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()


class ZooKeeperServer(ServerGroup):
    """A standalone ZooKeeper on 127.0.0.1:<free port> with its own temp data dir."""

    def __init__(
        self,
        workdir: str | os.PathLike[str] | None = None,
        tick_time: int = 500,
        port: int | None = None,
        extra_config: list[str] | None = None,
        jvm_args: list[str] | None = None,
    ) -> None:
        self._init_workdir(workdir, "smartstack-zk-")
        self.tick_time = tick_time
        self.extra_config = list(extra_config or [])
        self.node = _ZkNode(self.workdir, port or free_port(), "zookeeper", jvm_args)

    @property
    def port(self) -> int:
        return self.node.client_port

    @property
    def hosts(self) -> str:
        return self.node.address

    @property
    def pid(self) -> int | None:
        return self.node.pid

    @property
    def alive(self) -> bool:
        return self.node.alive

    @property
    def process(self) -> ManagedProcess | None:
        return self.node.process

    @property
    def gc_log(self) -> Path:
        return self.node.gc_log

    def start(self, timeout: float = 60.0) -> ZooKeeperServer:
        self.node.write_config(self.tick_time, self.extra_config)
        self.node.start(ZK_MAIN_STANDALONE)
        try:
            wait_until(self.node.serving, timeout, what=f"ZooKeeper on {self.hosts}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.node.stop(timeout)

    def kill(self) -> None:
        self.node.kill()


class ZooKeeperEnsemble(ServerGroup):
    """A `size`-member ZooKeeper ensemble (QuorumPeerMain) on 127.0.0.1."""

    def __init__(
        self,
        size: int = 3,
        workdir: str | os.PathLike[str] | None = None,
        tick_time: int = 500,
        extra_config: list[str] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("an ensemble needs at least one member")
        self._init_workdir(workdir, "smartstack-zkq-")
        self.tick_time = tick_time
        self.extra_config = list(extra_config or [])
        self.members = [
            _ZkNode(self.workdir / f"zk{i + 1}", free_port(), f"zookeeper-{i + 1}")
            for i in range(size)
        ]
        # server.N=host:peer:election, shared by every member's zoo.cfg.
        self._servers = [
            f"server.{i + 1}=127.0.0.1:{free_port()}:{free_port()}" for i in range(size)
        ]

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def hosts(self) -> str:
        return ",".join(m.address for m in self.members)

    @property
    def pids(self) -> list[int | None]:
        return [m.pid for m in self.members]

    def _quorum_serving(self) -> bool:
        modes = [server_mode(m.client_port) if m.alive else None for m in self.members]
        serving = sum(mode in SERVING_MODES for mode in modes)
        return modes.count("leader") == 1 and serving > self.size // 2

    def wait_for_quorum(self, timeout: float = 60.0) -> None:
        wait_until(self._quorum_serving, timeout, what=f"ZooKeeper quorum on {self.hosts}")

    def start(self, timeout: float = 60.0) -> ZooKeeperEnsemble:
        for i, member in enumerate(self.members):
            member.write_config(self.tick_time, [*self._servers, *self.extra_config])
            (member.data_dir / "myid").write_text(f"{i + 1}\n")
        for member in self.members:
            member.start(ZK_MAIN_QUORUM)
        try:
            wait_until(
                lambda: all(m.serving() for m in self.members),
                timeout,
                what=f"ZooKeeper ensemble on {self.hosts}",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        # All at once: members stopped one by one would wait on a vanishing quorum.
        for member in self.members:
            if member.process is not None:
                member.process.terminate()
        for member in self.members:
            member.stop(timeout)

    def kill_member(self, i: int) -> None:
        """SIGKILL member i (0-based): a crash, no goodbye to the quorum."""
        self.members[i].kill()

    def stop_member(self, i: int, timeout: float = 5.0) -> None:
        self.members[i].stop(timeout)

    def start_member(self, i: int, timeout: float = 60.0) -> None:
        """Restart member i with its data dir and wait until it serves again."""
        member = self.members[i]
        if member.alive:
            return
        member.start(ZK_MAIN_QUORUM)
        wait_until(member.serving, timeout, what=f"ZooKeeper member {i} to rejoin")

    def leader_index(self) -> int | None:
        """Index of the member whose `srvr` says Mode: leader, or None."""
        for i, member in enumerate(self.members):
            if member.alive and server_mode(member.client_port) == "leader":
                return i
        return None


def expire_session(client: KazooClient, timeout: float = 30.0) -> None:
    """Force a real expiry of `client`'s session and wait until it has seen LOST.

    A second client joining with the same session id and password and then closing it ends
    the session on the server, exactly as a timeout would. kazoo then reconnects with a NEW
    session: ephemeral nodes are gone and must be re-created by the application.
    """
    client_id = client.client_id
    if client_id is None:
        raise RuntimeError("the client is not connected: no session to expire")
    lost = threading.Event()

    def listener(state: KazooState) -> bool:
        if state == KazooState.LOST:
            lost.set()
            return True  # kazoo removes a listener that returns True
        return False

    client.add_listener(listener)
    hosts = ",".join(f"{host}:{port}" for host, port in client.hosts)
    other = KazooClient(hosts=hosts, client_id=client_id, timeout=timeout)
    try:
        other.start(timeout=timeout)
        other.stop()
    finally:
        other.close()
    try:
        wait_until(lost.is_set, timeout, what="the ZooKeeper client to see its session LOST")
    finally:
        client.remove_listener(listener)


# A super user for test servers only: past any ACL a test set, so a shared server can be
# emptied between test modules.
SUPER_USER = ("super", "smartstack-test")


def super_digest_jvm_arg() -> str:
    """The JVM option that makes SUPER_USER ZooKeeper's super user (digest scheme)."""
    user, password = SUPER_USER
    digest = base64.b64encode(hashlib.sha1(f"{user}:{password}".encode()).digest()).decode()
    return f"-Dzookeeper.DigestAuthenticationProvider.superDigest={user}:{digest}"


def wipe(hosts: str, timeout: float = 30.0) -> None:
    """Delete every node but /zookeeper, as SUPER_USER (the server needs
    super_digest_jvm_arg())."""
    client = KazooClient(hosts=hosts, auth_data=[("digest", ":".join(SUPER_USER))])
    client.start(timeout=timeout)
    try:
        for child in client.get_children("/"):
            if child != "zookeeper":
                client.delete(f"/{child}", recursive=True)
    finally:
        client.stop()
        client.close()
