"""Database locks: one holder at a time, across processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta

from sqlmodel import Session

from store import locks as lock_repo
from store.models import Lock, utcnow


def test_one_holder_at_a_time(session: Session) -> None:
    assert lock_repo.try_acquire(session=session, name="cycle", holder="a", ttl_s=60)
    assert not lock_repo.try_acquire(session=session, name="cycle", holder="b", ttl_s=60)
    assert lock_repo.current_holder(session=session, name="cycle", ttl_s=60) == "a"
    assert lock_repo.try_acquire(session=session, name="other", holder="b", ttl_s=60)
    lock_repo.release(session=session, name="cycle", holder="b")  # not b's: nothing happens
    assert lock_repo.current_holder(session=session, name="cycle", ttl_s=60) == "a"
    lock_repo.release(session=session, name="cycle", holder="a")
    assert lock_repo.current_holder(session=session, name="cycle", ttl_s=60) is None
    assert lock_repo.try_acquire(session=session, name="cycle", holder="b", ttl_s=60)


def test_a_dead_holders_lock_expires_and_a_refresh_keeps_it(session: Session) -> None:
    assert lock_repo.try_acquire(session=session, name="cycle", holder="a", ttl_s=60)
    assert lock_repo.refresh(session=session, name="cycle", holder="a")
    lock = session.get(Lock, "cycle")
    assert lock is not None
    lock.heartbeat_at = utcnow() - timedelta(seconds=120)  # a holder that stopped refreshing
    session.add(lock)
    session.commit()
    assert lock_repo.current_holder(session=session, name="cycle", ttl_s=60) is None
    assert lock_repo.try_acquire(session=session, name="cycle", holder="b", ttl_s=60)
    assert not lock_repo.refresh(session=session, name="cycle", holder="a")  # a learns it lost it


HOLDER = textwrap.dedent(
    """
    import sys
    from store import locks
    from store.db import make_engine, session_scope

    engine = make_engine(sys.argv[1])
    with session_scope(engine) as session:
        print(locks.try_acquire(session=session, name="cycle", holder=sys.argv[2], ttl_s=60), flush=True)
        sys.stdin.readline()  # hold the lock until the test says so
        locks.release(session=session, name="cycle", holder=sys.argv[2])
    print("released", flush=True)
    """
)


def test_two_processes_never_hold_the_lock_together(db_url: str) -> None:
    def holder(name: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", HOLDER, db_url, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    first = holder("process-1")
    assert first.stdout is not None and first.stdin is not None
    assert first.stdout.readline().strip() == "True"
    second = holder("process-2")
    assert second.stdout is not None and second.stdin is not None
    assert second.stdout.readline().strip() == "False"  # the first process still holds it
    second.stdin.close()
    second.wait(timeout=60)

    first.stdin.close()
    assert first.stdout.readline().strip() == "released"
    first.wait(timeout=60)
    third = holder("process-3")
    assert third.stdout is not None and third.stdin is not None
    assert third.stdout.readline().strip() == "True"  # free again once released
    third.stdin.close()
    third.wait(timeout=60)
