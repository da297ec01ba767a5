"""pytest plugin for applications built on lws (entry point ``pytest11``, name ``lws``).

Installed with the package, pytest loads it by itself; otherwise pass
``-p lws.pytest_plugin``. Fixtures:

``lws_server(*protocols, host="127.0.0.1", port=0, **context_options) -> lws.Context``
    Starts a listening context (ephemeral port by default) with the given
    protocols (instances, or classes made with no arguments) and serves it
    on a background thread. Returns the running context: ``ctx.port``,
    ``lws.testing.ws_url(ctx)``. Call it as often as needed; every context
    is stopped, its thread joined and the context closed after the test,
    whether it passed or not.

``lws_client(target, protocol=None, *, path="/", subprotocol=..., **options) -> Client``
    Connects a client protocol (default: a :class:`lws.testing.MessageClient`)
    to ``target``, a ``ws://`` URL or a context from ``lws_server``, from a
    client context of its own on a background thread; ``options`` go to
    :meth:`lws.Context.connect`. The returned :class:`lws.testing.Client`
    has ``wait_established()``, ``recv()``, ``send()``, ``close()``,
    ``wait(condition)`` and ``wait_closed()``. Closed after the test.

``lws_recorder -> lws.testing.Recorder``
    Records every callback of the protocols started by ``lws_server`` and
    ``lws_client`` in the same test (or of those passed to
    ``lws_recorder.instrument()`` / made with ``lws_recorder.recorded()``),
    and after the test, once those contexts are closed, fails it (an error at
    teardown) if lws' invariants were broken: a connection ended with both
    ``CLIENT_CONNECTION_ERROR`` and ``CLIENT_CLOSED``, a callback after
    ``WSI_DESTROY``, unbalanced ``*_BIND_PROTOCOL``/``*_DROP_PROTOCOL``, or a
    handler that used a session view after lws freed its buffer, even if the
    handler caught the :class:`lws.SessionClosed`.

For type annotations: ``lws.testing.ServerFactory``, ``lws.testing.ClientFactory``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .context import Context
    from .protocol import Protocol
    from .testing import Client, ClientFactory, Recorder, ServerFactory

__all__ = ["lws_client", "lws_recorder", "lws_server"]

# lws is imported only inside the fixtures: loading this plugin (which pytest
# does in every session of an environment where lws-cffi is installed) must
# not load the compiled extension.


def _recorder_of(request: pytest.FixtureRequest) -> Recorder | None:
    """The test's lws_recorder, set up now (so it is torn down after the caller)."""
    if "lws_recorder" in request.fixturenames:
        rec: Recorder = request.getfixturevalue("lws_recorder")
        return rec
    return None


@pytest.fixture
def lws_recorder() -> Iterator[Recorder]:
    """A :class:`lws.testing.Recorder` whose invariants are checked after the test."""
    from .testing import Recorder

    recorder = Recorder()
    yield recorder
    recorder.check()


@pytest.fixture
def lws_server(request: pytest.FixtureRequest) -> Iterator[ServerFactory]:
    """Factory: ``lws_server(*protocols, **options)`` starts a served context."""
    from .testing import server

    recorder = _recorder_of(request)
    with ExitStack() as stack:

        def start(*protocols: Protocol | type[Protocol], host: str = "127.0.0.1",
                  port: int = 0, **options: Any) -> Context:
            if not protocols:
                raise TypeError("lws_server() needs at least one protocol")
            return stack.enter_context(
                server(*protocols, host=host, port=port, recorder=recorder, **options))

        yield start


@pytest.fixture
def lws_client(request: pytest.FixtureRequest) -> Iterator[ClientFactory]:
    """Factory: ``lws_client(url_or_context, protocol=None, **options)`` connects a client."""
    from .testing import client

    recorder = _recorder_of(request)
    with ExitStack() as stack:

        def connect(target: str | Context, protocol: Protocol | type[Protocol] | None = None,
                    **options: Any) -> Client:
            return stack.enter_context(client(target, protocol, recorder=recorder, **options))

        yield connect
