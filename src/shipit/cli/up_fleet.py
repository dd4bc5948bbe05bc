"""``shipit up --fleet fleet.yaml``: every plane's gateway as its own process, one front door.

Each plane of ``fleet.yaml`` runs as a child ``shipit up --config <plane>.yaml --port P`` (its
``gateway:`` section written out, its own log file, replica logs and rollout state under the
log directory), started in its own session (a Ctrl-C at the terminal reaches the front door
only) and with ``PR_SET_PDEATHSIG`` so that a front door killed with SIGKILL still takes its
planes down (each drains and stops its replicas). Once every plane's gateway has a ready replica,
this process serves the global front door (``gateway.front_door``) on ``front_door.port``.
SIGINT or SIGTERM: the front door drains its open requests (the planes still serve them), then
each plane gets SIGTERM and drains; a third signal forces the stop (each plane is forced in turn:
it kills its replicas).
Exit status as ``shipit up``: 0 drained, 1 cut or a plane that failed, 130 forced.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import typer
import uvloop
import yaml
from rich.console import Console
from rich.markup import escape

from shipit.backends.child import die_with_parent
from shipit.backends.local import free_port
from shipit.config.fleet import FleetConfig, PlaneConfig, load_fleet_config
from shipit.config.gateway import ConfigError, ShipitConfig, parse_config
from shipit.gateway.front_door import FrontDoorApp
from shipit.gateway.server import Stopped, bind_socket, serve
from shipit.policy.autoscaling.settings import effective_config
from shipit.services.front_door import FrontDoor, PlaneTarget
from shipit.services.front_door_views import OFFSET_HEADER, REGION_HEADER, RESIDENCY_HEADER
from shipit.services.upstream import AiohttpUpstream, UpstreamError

STOP_GRACE_S = 30.0  # past a plane's own drain bound before it is killed
_EXIT = {Stopped.DRAINED: 0, Stopped.CUT: 1, Stopped.FORCED: 130}


@dataclass(frozen=True, slots=True)
class PlanePlan:
    """One plane's gateway process, as it will be started."""

    name: str
    port: int
    gateway: dict[str, object]  # its shipit.yaml
    target: PlaneTarget
    startup_timeout_s: float
    drain_s: float


def plan_planes(fleet: FleetConfig, *, source: str) -> list[PlanePlan]:
    """Every plane's process; ``ConfigError`` naming the plane and what to add when a plane
    lacks what a live fleet needs (``port``, ``gateway``) or ports collide."""
    taken = {fleet.front_door.port: "front_door.port"}
    plans = []
    for i, plane in enumerate(fleet.planes):
        where = f"{source}: fleet.planes.{i} ({plane.name})"
        if plane.gateway is None:
            raise ConfigError(
                f"{where}: a live fleet (shipit up --fleet) starts each plane's gateway from "
                "its gateway: section (the plane's own shipit.yaml: deployments, replicas, "
                "simulate ...); add one, see docs/fleet.md#live-fleet",
                field=f"fleet.planes.{i}.gateway",
            )
        if plane.port is None:
            raise ConfigError(
                f"{where}: a live fleet needs port: the port this plane's gateway listens on "
                "(0: any free port)",
                field=f"fleet.planes.{i}.port",
            )
        if "plane" in plane.gateway:
            raise ConfigError(
                f"{where}: gateway.plane is written by shipit up --fleet from the plane's own "
                "fields (pools) and control_plane; remove it from the gateway: section",
                field=f"fleet.planes.{i}.gateway.plane",
            )
        gateway = {**plane.gateway, "plane": live_plane(fleet, plane)}
        cfg = parse_config(gateway, source=f"{where} gateway")
        _obtain_fits(where, i, plane, cfg)
        port = plane.port
        if port == 0:
            port = free_port(cfg.gateway.host)
        elif port in taken:
            raise ConfigError(
                f"{where}: port {port} is also {taken[port]}; give each plane and the front "
                "door a port of its own",
                field=f"fleet.planes.{i}.port",
            )
        taken[port] = f"plane {plane.name}'s port"
        host = cfg.gateway.host if cfg.gateway.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        scheme = "https" if cfg.gateway.tls.enabled else "http"
        target = PlaneTarget(
            name=plane.name,
            url=f"{scheme}://{host}:{port}",
            utc_offset_h=plane.utc_offset_h,
            role=plane.role,
            residency=frozenset(plane.residency),
            max_concurrency={d.name: d.queueing.max_concurrency for d in cfg.deployments},
        )
        plans.append(
            PlanePlan(
                name=plane.name,
                port=port,
                gateway=gateway,
                target=target,
                startup_timeout_s=max(d.startup_timeout_s for d in cfg.deployments),
                drain_s=cfg.gateway.graceful_shutdown_s
                + max(d.drain_timeout_s for d in cfg.deployments),
            )
        )
    return plans


def _obtain_fits(where: str, i: int, plane: PlaneConfig, cfg: ShipitConfig) -> None:
    """A replica waiting for its machine is ``starting``: a pool's obtain delay must end
    before the deployment's startup timeout, or it would be replaced as never ready."""
    for name in ("reserved", "on_demand", "spot"):
        pool = getattr(plane.pools, name)
        if pool is None or pool.obtain_delay_s <= 0:
            continue
        for d in cfg.deployments:
            scaling = effective_config(d)
            timeout_s = scaling.startup_timeout_s if scaling is not None else d.startup_timeout_s
            if pool.obtain_delay_s >= timeout_s:
                raise ConfigError(
                    f"{where}: pools.{name}.obtain_delay_s {pool.obtain_delay_s:g} is not under "
                    f"deployment {d.name}'s startup_timeout_s {timeout_s:g}: a replica still "
                    "waiting for its machine would be replaced as never ready; raise "
                    "startup_timeout_s in the plane's gateway: section above the obtain delay "
                    "plus the replica's own start, or lower obtain_delay_s",
                    field=f"fleet.planes.{i}.pools.{name}.obtain_delay_s",
                )


def live_plane(fleet: FleetConfig, plane: PlaneConfig) -> dict[str, object]:
    """The ``plane:`` section of a plane's gateway config: its pools and how its spot
    pre-emptions and GPU failures are drawn (``services.spot_pools``,
    ``services.gpu_failures``)."""
    cp = fleet.control_plane
    return {
        "name": plane.name,
        "pools": plane.pools.model_dump(exclude_none=True),
        "gpus_per_replica": fleet.gpus_per_replica,
        "gpu_failures_per_hour": fleet.gpu_failures_per_hour,
        "spot_seed": cp.spot_seed,
        "spot_check_interval_s": cp.spot_check_interval_s,
    }


class PlaneFailedError(Exception):
    pass


class PlaneProcesses:
    """The planes' ``shipit up`` children: start, wait until ready, stop (drain, then kill)."""

    def __init__(self, plans: list[PlanePlan], log_dir: Path, log_level: str) -> None:
        self.plans = plans
        self.log_dir = log_dir
        self.log_level = log_level
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def argv(self, plan: PlanePlan, config: Path) -> list[str]:
        d = self.log_dir
        return [
            sys.executable, "-m", "shipit", "up", "--config", str(config),
            "--port", str(plan.port), "--log-dir", str(d / f"{plan.name}-replicas"),
            "--state-dir", str(d / f"{plan.name}-state"), "--log-level", self.log_level,
        ]  # fmt: skip

    def start(self) -> None:
        """From the main thread: PR_SET_PDEATHSIG fires when the thread that forked ends."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for plan in self.plans:
            config = self.log_dir / f"{plan.name}.yaml"
            config.write_text(yaml.safe_dump(plan.gateway, sort_keys=False))
            with self.log_path(plan.name).open("ab") as out:
                self.procs[plan.name] = subprocess.Popen(
                    self.argv(plan, config),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent(signal.SIGTERM),
                )

    def _tail(self, name: str, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def wait_ready(self, timeout_s: float) -> None:
        """Until every plane's gateway answers ``/health`` 200 (a replica is ready)."""
        client = AiohttpUpstream(h1=False)
        waiting = {p.name: p.target.url for p in self.plans}
        deadline = time.monotonic() + timeout_s
        try:
            while waiting:
                for name, url in list(waiting.items()):
                    code = self.procs[name].poll()
                    if code is not None:
                        raise PlaneFailedError(
                            f"plane {name}'s gateway exited {code} while starting; the end of "
                            f"{self.log_path(name)}:\n{self._tail(name)}"
                        )
                    with contextlib.suppress(UpstreamError):
                        status, _ = await client.get(url + "/health", timeout_s=2.0)
                        if status == 200:
                            del waiting[name]
                if time.monotonic() > deadline and waiting:
                    names = ", ".join(waiting)
                    raise PlaneFailedError(
                        f"planes not ready after {timeout_s:g}s: {names} (no ready replica); "
                        f"see their logs in {self.log_dir}"
                    )
                await asyncio.sleep(0.2)
        finally:
            await client.close()

    def stop(self, *, force: bool) -> dict[str, int]:
        """SIGTERM to every plane still running, then wait for each up to its drain bound plus
        a grace; a plane still running then is killed. With ``force`` the SIGTERM is sent three
        times, which a plane's ``shipit up`` takes as a forced stop: it kills its replicas and
        exits (a SIGKILL here would leave its replicas behind). A signal while waiting
        (KeyboardInterrupt) forces the rest the same way."""
        self._term(3 if force else 1)
        bound = {p.name: p.drain_s + STOP_GRACE_S for p in self.plans}
        try:
            for name, proc in self.procs.items():
                try:
                    proc.wait(timeout=STOP_GRACE_S if force else bound.get(name, STOP_GRACE_S))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        except KeyboardInterrupt:
            self._term(3)
            for proc in self.procs.values():
                try:
                    proc.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            raise
        return {name: proc.returncode for name, proc in self.procs.items()}

    def _term(self, times: int) -> None:
        for i in range(times):
            if i:
                time.sleep(0.3)  # one by one: signals sent at once may merge into one
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)


def default_offset_h(fleet: FleetConfig) -> float:
    """``front_door.utc_offset_h``, else this machine's local offset."""
    if fleet.front_door.utc_offset_h is not None:
        return fleet.front_door.utc_offset_h
    return time.localtime().tm_gmtoff / 3600.0


def control_headers(fleet: FleetConfig) -> dict[str, str]:
    """The planes' admin key (``control_plane.admin_key_env``) as a bearer header for the
    control plane's calls (status probes, scaling bounds); none when not configured."""
    env = fleet.control_plane.admin_key_env
    if env is None:
        return {}
    key = os.environ.get(env, "").strip()
    if not key:
        raise ConfigError(
            f"control_plane.admin_key_env names {env}, which is not set (or empty); export an "
            "admin key of the planes' gateways there (shipit keys create --admin)",
            field="fleet.control_plane.admin_key_env",
        )
    return {"authorization": f"Bearer {key}"}


class _StopError(Exception):
    """SIGTERM before the front door's server handles signals."""


def _term(signum: int, frame: object) -> None:
    raise _StopError()


def up_fleet(
    path: Path, *, log_dir: Path | None, keep_logs: bool, log_level: str, single: dict[str, object]
) -> None:
    console = Console(stderr=True)
    given = [flag for flag, value in single.items() if value not in (None, [], ())]
    if given:
        console.print(
            f"[red]error:[/] {', '.join(given)} configure one gateway; with --fleet each plane "
            "runs from its own gateway: section in the fleet file (set them there)"
        )
        raise typer.Exit(2)
    try:
        fleet = load_fleet_config(path)
        plans = plan_planes(fleet, source=str(path))
    except ConfigError as exc:
        console.print(f"[red]error:[/] {escape(exc.message)}")
        raise typer.Exit(2) from exc
    fd = fleet.front_door
    door_cfg = parse_config({"gateway": {"host": fd.host, "port": fd.port}}, source="front_door")
    try:
        sock = bind_socket(fd.host, fd.port)
    except OSError as exc:
        console.print(f"[red]error:[/] front door cannot listen on {fd.host}:{fd.port}: {exc}")
        raise typer.Exit(2) from exc
    temporary = log_dir is None
    logs = log_dir or Path(tempfile.mkdtemp(prefix="shipit-fleet-"))
    planes = PlaneProcesses(plans, logs, log_level)
    try:
        control = control_headers(fleet)
    except ConfigError as exc:
        console.print(f"[red]error:[/] {escape(exc.message)}")
        raise typer.Exit(2) from exc
    door = FrontDoor(
        fleet,
        [p.target for p in plans],
        default_offset_h=default_offset_h(fleet),
        control_headers=control,
    )
    app = FrontDoorApp(door, door_cfg)
    listen = f"http://{fd.host}:{sock.getsockname()[1]}"

    def on_listening() -> None:
        console.print(
            f"[bold]shipit front door[/] listening on {listen}/v1  ({fleet.posture}; serving: "
            f"{', '.join(door.serving())}); clients say where they are with {REGION_HEADER}: "
            f"<plane> or {OFFSET_HEADER}: <hours>, and {RESIDENCY_HEADER}: <tag>"
        )
        console.print(f"fleet status: {listen}/shipit/fleet   logs: {logs}")

    signal.signal(signal.SIGTERM, _term)
    stopped, failed, serving = Stopped.FORCED, False, False
    try:
        planes.start()
        for plan in plans:
            console.print(
                f"plane {plan.name} ({plan.target.role}, UTC{plan.target.utc_offset_h:+g}): "
                f"gateway {plan.target.url}, pid {planes.procs[plan.name].pid}, log "
                f"{planes.log_path(plan.name)}"
            )
        timeout_s = max(p.startup_timeout_s for p in plans) + 30.0
        asyncio.run(planes.wait_ready(timeout_s))
        serving = True
        stopped = uvloop.run(
            serve(
                app,
                sock,
                graceful_shutdown_s=door_cfg.gateway.graceful_shutdown_s,
                on_listening=on_listening,
            )
        )
    except PlaneFailedError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        stopped, failed = Stopped.DRAINED, True
    except (KeyboardInterrupt, _StopError):
        stopped = Stopped.FORCED
    finally:
        sock.close()
        try:  # stopped while the planes were starting: they have nothing to drain
            codes = planes.stop(force=serving and stopped is Stopped.FORCED)
        except KeyboardInterrupt:
            stopped, codes = Stopped.FORCED, {}
        if temporary and not keep_logs:
            shutil.rmtree(logs, ignore_errors=True)
    bad = {name: code for name, code in codes.items() if code != 0}
    if bad:
        shown = ", ".join(f"{n} exited {c}" for n, c in bad.items())
        console.print(f"[yellow]planes that did not stop cleanly:[/] {shown}")
    code = _EXIT[stopped] or (1 if failed or bad else 0)
    console.print(f"shipit front door stopped ({stopped.value}); planes stopped")
    if code:
        raise typer.Exit(code)
