"""The call proxy: the judge (trusted tests) calls the candidate's entry point in another process, as data.

Standard library only; both halves run inside sandboxed interpreters started by the harness:
  candidate side  `serve`: after the solution ran, answer each call frame with the entry point's result
                  (wire.encode) or the exception it raised; the first frame says whether it is ready.
  judge side      `CandidateStub`: what the tests see as the entry point; `run_tests` runs the prompt's
                  helpers (context) and the tests with it. The judge never executes candidate code and
                  builds every value it compares with wire.loads, so the candidate's interpreter, modules,
                  builtins, frames and files cannot change a verdict.
What cannot cross (arguments mutated in place, callables as arguments, other names of the solution the
tests use) is listed in docs/sandbox.md.
"""

from __future__ import annotations

import builtins
import json

from .policy import MESSAGE_CHARS
from .wire import ChannelClosed, WireError, dumps, encode, read_frame, value_of, write_frame


class CandidateGone(Exception):
    """The candidate's process ended (or its channel went out of step) during a call."""


class CandidateError(Exception):
    """The candidate raised an exception that is not a builtin one (its type name and message)."""


class NotSendable(BaseException):
    """The tests passed something that is not plain data to the candidate: this benchmark cannot be proxied.
    (A BaseException: test code catching Exception must not turn it into a verdict.)"""


# ---- candidate side ----

def _safe_str(e: BaseException) -> str:
    try:
        return str(e)[:MESSAGE_CHARS]
    except BaseException:
        return "?"


def serve(g: dict, entry_point: str, req_fd: int, resp_fd: int) -> None:
    """Answer calls until the judge closes the channel (runs in the candidate's process)."""
    fn = g.get(entry_point)
    if not callable(fn):
        write_frame(resp_fd, json.dumps({"ready": False, "message": f"NameError: no function {entry_point!r}"}).encode())
        return
    write_frame(resp_fd, b'{"ready":true}')
    while True:
        try:
            request = json.loads(read_frame(req_fd))
        except ChannelClosed:
            return
        try:
            args = value_of(request["args"], opaque_ok=True)
            kwargs = value_of(request["kwargs"], opaque_ok=True)
            payload = b'{"ok":' + dumps(fn(*args, **kwargs)) + b"}"
        except BaseException as e:   # SystemExit and KeyboardInterrupt are the candidate's failures too
            # the nearest builtin class: the judge raises only builtin exceptions, named by the candidate
            base = next((c.__name__ for c in type(e).__mro__ if c.__module__ == "builtins"), "Exception")
            payload = json.dumps({"raise": [base[:80], _safe_str(e)]}).encode()
        write_frame(resp_fd, payload)


# ---- judge side ----

class CandidateStub:
    """The entry point as the tests see it: each call is a round trip to the candidate's process."""

    def __init__(self, name: str, req_fd: int, resp_fd: int, opaque_ok: bool):
        self.__name__ = self.__qualname__ = name
        self._req, self._resp, self._opaque_ok = req_fd, resp_fd, opaque_ok
        self.gone = False        # the candidate's process ended: its own status tells why
        self._in_call = False    # a call interrupted (a time limit) leaves the channel out of step

    def wait_ready(self) -> str:
        """'' once the candidate ran its solution and has the entry point, else why not."""
        try:
            hello = json.loads(read_frame(self._resp, 1 << 16))
        except (ChannelClosed, OSError):
            self.gone = True
            return "the candidate's process ended before it was ready"
        except ValueError:
            return "the candidate sent garbage instead of its first frame"
        if hello == {"ready": True}:
            return ""
        return str(hello.get("message", "not ready") if isinstance(hello, dict) else "not ready")[:MESSAGE_CHARS]

    def __call__(self, *args, **kwargs):
        if self.gone or self._in_call:
            raise CandidateGone("the candidate's process is gone or out of step")
        try:
            request = json.dumps({"args": encode(list(args)), "kwargs": encode(kwargs)}, separators=(",", ":"))
        except (ValueError, RecursionError) as e:
            raise NotSendable(f"the arguments cannot be sent: {e}") from None
        if "opaque" in request and _has_opaque(json.loads(request)):
            raise NotSendable("the tests pass a value with no plain form (a function, an object) to the candidate")
        self._in_call = True
        try:
            write_frame(self._req, request.encode())
            frame = read_frame(self._resp)
        except (ChannelClosed, BrokenPipeError):
            self.gone = True
            raise CandidateGone("the candidate's process ended during a call") from None
        self._in_call = False
        try:
            reply = json.loads(frame)
        except (ValueError, RecursionError):
            raise WireError("the candidate's reply is not JSON") from None
        if type(reply) is not dict or len(reply) != 1:
            raise WireError("the candidate's reply is not {ok: ...} or {raise: ...}")
        if "ok" in reply:
            return value_of(reply["ok"], opaque_ok=self._opaque_ok)
        raised = reply.get("raise")
        if type(raised) is not list or len(raised) != 2 or not all(type(s) is str for s in raised):
            raise WireError("the candidate's reply is not {ok: ...} or {raise: [type, message]}")
        name, message = raised[0][:80], raised[1][:MESSAGE_CHARS]
        cls = getattr(builtins, name, None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            raise cls(message)
        raise CandidateError(f"{name}: {message}")


def _has_opaque(tree) -> bool:
    stack = [tree]
    while stack:
        t = stack.pop()
        if type(t) is dict:
            if "opaque" in t and len(t) == 1:
                return True
            stack.extend(t.values())
        elif type(t) is list:
            stack.extend(t)
    return False


def run_tests(context, test, entry_point: str, stub: CandidateStub, module_name: str) -> None:
    """The prompt's helpers (trusted dataset code; skipped when they do not run alone), then the tests with
    the stub as the entry point. Raises what the tests raise."""
    tg: dict = {"__name__": module_name}
    if context is not None:
        try:
            exec(context, tg)
        except Exception:
            tg = {"__name__": module_name}
    why = stub.wait_ready()
    if why:
        raise CandidateGone(why)
    tg[entry_point] = stub
    exec(test, tg)
