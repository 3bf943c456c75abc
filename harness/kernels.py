"""The next sweep point's kernel, started and warmed while the current point goes on.

Measured on a 2-core machine, a 2,000-order sweep point took 1.9 s for a run that took 0.2 s:
0.5 s to start its kernel, 0.5 s for the notebook's imports (harness, pandas, matplotlib),
0.2 s of charts, 0.3 s for papermill to shut the kernel down and write the notebook. So the
sweep starts point k+1's kernel, with those imports done, while point k goes on: at the
lowest CPU priority, so that it only uses what the measured run leaves idle (see
:class:`WarmKernels`), and shuts point k's kernel down with it. Each point is still its own
notebook, executed by papermill, in a kernel of its own: a warm kernel has only imported
modules, nothing of the notebook ran.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger("harness")
KERNEL = "python3"
# What run.ipynb imports; executed in a kernel before its notebook, so that its first cell
# finds them loaded. Errors are the notebook's to report, not the warm-up's. Then what is
# loaded goes to the permanent generation (gc.freeze): the inline backend closes every
# figure it shows with plt.close("all"), which runs a full gc.collect() -- 25-35 ms over a
# warm kernel's ~130,000 objects, four times a point -- and a frozen kernel's takes ~0.
WARM_UP = """
try:
    import IPython.display, matplotlib.pyplot, tqdm.std
    import harness.charts, harness.pipeline, harness.runs
except Exception:
    pass
import gc
gc.freeze()
"""
START_TIMEOUT_S = 60.0


def start_kernel(env: Mapping[str, str], cwd: Path, warm_up: str = WARM_UP,
                 nice: int | None = None, started: Callable[[Any], None] | None = None) -> Any:
    """A started kernel (a jupyter_client KernelManager) with ``env`` and ``cwd``, on local
    sockets, with ``warm_up`` executed in it; at scheduling priority ``nice`` if given. Its
    client stays connected (``km.warm_client``), for the notebook's execution: connecting
    one cost 0.2 s of every sweep point."""
    from jupyter_client.manager import KernelManager
    from jupyter_core.paths import jupyter_runtime_dir

    # IPC socket paths are relative unless given: the kernel (in ``cwd``) and this process
    # would look for them in different folders. A socket path has at most 107 bytes, so the
    # sockets go in a short folder of their own, not the (often long) runtime folder.
    sockets = Path(tempfile.mkdtemp(prefix="hk-", dir="/tmp" if Path("/tmp").is_dir() else None))
    name = uuid.uuid4().hex[:12]
    km = KernelManager(kernel_name=KERNEL, transport="ipc", ip=str(sockets / "k"),
                       connection_file=str(Path(jupyter_runtime_dir()) / f"harness-{name}.json"))
    km.sockets_dir = sockets  # type: ignore[attr-defined]  # removed with it: shutdown_kernel
    km.warm_client = None  # type: ignore[attr-defined]  # taken by the engine, see engine_name
    try:
        Path(km.connection_file).parent.mkdir(parents=True, exist_ok=True)
        km.start_kernel(env=dict(env), cwd=str(cwd))
        if nice is not None:
            set_nice(km, nice)
        if started is not None:
            started(km)  # its process exists: its priority can be changed from now on
        kc = km.client()
        km.warm_client = kc  # type: ignore[attr-defined]
        kc.start_channels()
        kc.wait_for_ready(timeout=START_TIMEOUT_S)
        # Its outputs are nobody's: not printed (a warm-up interrupted by a Ctrl-C meant for
        # the running notebook would otherwise print a KeyboardInterrupt traceback).
        kc.execute_interactive(warm_up, timeout=START_TIMEOUT_S, store_history=False,
                               output_hook=lambda msg: None)
    except BaseException:
        shutdown_kernel(km)
        raise
    return km


# A kernel warmed while a measured run goes on does so at the lowest priority, so that it
# only takes CPU time the run leaves idle; it gets the sweep's own priority back when used.
IDLE_NICE = 19


def set_nice(km: Any, nice: int) -> None:
    """Set every thread of ``km``'s kernel process to ``nice`` (Linux applies a nice value
    per thread). Raises PermissionError where raising a priority is not allowed."""
    pid = km.provisioner.pid
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.setpriority(os.PRIO_PROCESS, int(task.name), nice)


ENGINE = "harness-warm"
_registered = False


def engine_name() -> str:
    """The papermill engine that runs a notebook in a kernel given as ``km=``, through the
    client :func:`start_kernel` connected, and closes that client when the notebook ends
    (papermill's own left one per point with its sockets open). The kernel itself is the
    caller's to shut down (:func:`shutdown_kernel`, or in the background)."""
    global _registered
    if not _registered:
        from papermill.clientwrap import PapermillNotebookClient
        from papermill.engines import NBClientEngine, papermill_engines
        from papermill.log import logger
        from papermill.utils import merge_kwargs, remove_args

        class WarmEngine(NBClientEngine):
            @classmethod
            def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, log_output: bool = False,
                                         stdout_file: Any = None, stderr_file: Any = None,
                                         start_timeout: int = 60, execution_timeout: Any = None,
                                         **kwargs: Any) -> Any:
                kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
                final = merge_kwargs(kwargs, timeout=execution_timeout, startup_timeout=start_timeout,
                                     kernel_name=kernel_name, log=logger, log_output=log_output,
                                     stdout_file=stdout_file, stderr_file=stderr_file)
                client = PapermillNotebookClient(nb_man, **final)
                client.kc = getattr(final.get("km"), "warm_client", None)
                # papermill writes the whole notebook as each cell starts and completes, for
                # watching long notebooks: ~30 writes of 2.5 ms and more in a point of
                # under a second. It is written once, when it ends, in any way (papermill's
                # notebook_complete, right after this).
                output_path, nb_man.output_path = nb_man.output_path, None
                try:
                    return client.execute(cleanup_kc=False)
                finally:
                    nb_man.output_path = output_path
                    if client.kc is not None:
                        client.kc.stop_channels()

        papermill_engines.register(ENGINE, WarmEngine)
        _registered = True
    return ENGINE


class WarmKernels:
    """Kernels warming up for the next points, and the finished ones going down.

    When a point starts, the kernels of the next ``ahead`` points start warming at the
    lowest priority (``early``): a notebook is mostly one busy core, and a kernel's start
    (~1.1 s of CPU: the interpreter, ipykernel, the notebook's imports) takes longer than a
    small point (~0.8 s), so it gets two points' idle CPU. A kernel gets the sweep's
    priority back when taken, before its warm-up is waited for. Where raising a priority is
    not allowed (a container without CAP_SYS_NICE, a non-root user who lowered it), warm-ups
    start only once each run has ended (:meth:`prepare` with ``after_run``), one at a time,
    at normal priority.
    """

    def __init__(self, ahead: int = 2) -> None:
        self.ahead = ahead
        self._pool = ThreadPoolExecutor(max_workers=ahead + 1, thread_name_prefix="warm-kernel")
        self._next: dict[int, Future[Any]] = {}  # point -> its kernel, warming
        self._starting: dict[int, Any] = {}  # point -> its kernel, once its process exists
        self._lock = threading.Lock()
        self._stopping: list[Future[None]] = []
        self.early = hasattr(os, "setpriority") and Path("/proc/self/task").is_dir()
        self._nice = os.getpriority(os.PRIO_PROCESS, 0) if self.early else 0

    def prepare(self, point: int, env: Mapping[str, str], cwd: Path, after_run: bool = False) -> None:
        """Start warming ``point``'s kernel, once: at an earlier point's start when ``early``,
        else once the run before it has ended (``after_run``)."""
        if after_run == self.early:
            return
        with self._lock:
            if point not in self._next:
                nice = IDLE_NICE if self.early else None
                self._next[point] = self._pool.submit(
                    start_kernel, env, cwd, WARM_UP, nice,
                    lambda km: self._started(point, km))

    def _started(self, point: int, km: Any) -> None:
        with self._lock:
            self._starting[point] = km

    def take(self, point: int, env: Mapping[str, str], cwd: Path) -> Any:
        """``point``'s kernel (at the sweep's priority), or one started now.

        Its priority is given back first, then its warm-up is waited for: the point before
        has ended, so a warm-up not done yet has nothing left to give way to."""
        with self._lock:
            future = self._next.pop(point, None)
            starting = self._starting.pop(point, None)
        if future is None:
            return start_kernel(env, cwd)
        km = None
        try:
            if self.early and starting is not None:
                set_nice(starting, self._nice)
            km = future.result()
            if self.early and starting is None:
                set_nice(km, self._nice)
            return km
        except PermissionError:
            log.warning("cannot give a warm kernel its priority back here; the next "
                        "kernels start once each run has ended")
            self.early = False
            with self._lock:  # every kernel warming now was started at the lowest priority
                others, self._next, self._starting = list(self._next.values()), {}, {}
            for waiting in [future, *others]:
                waiting.add_done_callback(self._retire_when_started)
            return start_kernel(env, cwd)
        except BaseException:  # Ctrl-C while waiting, a failed warm-up: nothing left running
            future.add_done_callback(self._retire_when_started)
            raise

    def _retire_when_started(self, future: Future[Any]) -> None:
        if future.exception() is None:
            self.retire(future.result())

    def retire(self, km: Any) -> None:
        """Shut ``km`` down in the background."""
        self._stopping.append(self._pool.submit(shutdown_kernel, km))

    def close(self) -> None:
        """Shut down every kernel this pool started; return when they are gone."""
        with self._lock:
            futures, self._next = list(self._next.values()), {}
        for future in futures:
            try:
                self.retire(future.result())
            except Exception:  # a warm-up that failed left nothing running
                log.debug("a warm kernel failed to start", exc_info=True)
        for stopping in self._stopping:
            stopping.result()
        self._pool.shutdown(wait=True)


def shutdown_kernel(km: Any) -> None:
    """Stop ``km``'s kernel (if it runs) and remove its sockets."""
    client = getattr(km, "warm_client", None)
    if client is not None and client.channels_running:
        client.stop_channels()
    try:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    finally:
        km.cleanup_resources()
        shutil.rmtree(km.sockets_dir, ignore_errors=True)
