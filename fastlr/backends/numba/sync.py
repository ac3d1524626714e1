"""How the threads of one parallel region meet: atomic flags and a meeting that counts long waits.

Shapes: T threads.

The chosen epoch runs as one ``prange`` over the T threads; within it the threads meet twice
per step (after the partial gradients, after the update). A meeting is a per-thread line of
``MEETING_SLOTS`` int64 flags: ``_publish`` is a release store, ``_wait_until`` spins on
acquire loads with x86's ``pause`` in between (a plain spin on other CPUs: ``TUNING.pause``)
and yields the core between tries once a wait is long (a thread it waits for may share the
core), and says whether it had to; ``_meeting`` is thread k's side of one meeting. They are
LLVM IR through ``numba.core.extending.intrinsic`` because Numba has no atomics of its own.

A long wait means a thread that was not running: another process took its core. Each thread
counts its own, and publishes the count with its arrival at every meeting, so every thread
reads the same team total there and the team can agree, with no further meeting, to stop at
the end of a step (``fastlr/threads.py`` says when).

Threads that spin on each other must all run at once: ``_threads_run_at_once`` says whether a
``prange(T)`` gives every chunk its own thread (OpenMP and workqueue do if Numba has T; TBB's
work stealing may run two chunks on one thread, one after the other, which never finishes). It
is plain Python: Numba's thread count read inside a kernel would keep that kernel out of the
cache.
"""

from llvmlite import ir
from numba import get_num_threads, njit, threading_layer, types
from numba.core import cgutils
from numba.core.extending import intrinsic

from .tuning import TUNING


@intrinsic
def _publish(typingctx, flags, j, value):
    """``flags[j] = value`` as an atomic store with release ordering: every store before it
    is visible to a thread that reads ``value`` with acquire ordering. flags: int64 array."""
    sig = types.void(flags, j, value)

    def codegen(context, builder, signature, args):
        fa = context.make_array(signature.args[0])(context, builder, args[0])
        builder.store_atomic(args[2], builder.gep(fa.data, [args[1]]), "release", 8)
        return context.get_dummy_value()

    return sig, codegen


# Tries of a spin before each further try first yields the core (``sched_yield``): a meeting
# takes microseconds, so a thread still waiting after this many tries (a millisecond or so)
# most likely waits for a thread that shares its core, which runs only when it yields. Without
# the yield, both threads of an epoch on one core (``taskset -c 0``, or the other core busy)
# made an epoch an order of magnitude slower (docs/journal/xeon-sapphire-rapids.md).
SPINS_BEFORE_YIELD = 1 << 13


@intrinsic
def _wait_until(typingctx, flags, j, value):
    """Spin (``pause`` between tries) until ``flags[j] >= value``, read with acquire
    ordering; after SPINS_BEFORE_YIELD tries, yield the core before every further try.
    Returns 1 (int64) if the wait was that long, else 0."""
    sig = types.int64(flags, j, value)

    def codegen(context, builder, signature, args):
        fa = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(fa.data, [args[1]])
        i64 = ir.IntType(64)
        tries = cgutils.alloca_once_value(builder, ir.Constant(i64, 0))
        spin = builder.append_basic_block("spin")
        wait = builder.append_basic_block("wait")
        done = builder.append_basic_block("done")
        builder.branch(spin)
        builder.position_at_end(spin)
        seen = builder.load_atomic(ptr, "acquire", 8)
        builder.cbranch(builder.icmp_signed(">=", seen, args[2]), done, wait)
        builder.position_at_end(wait)
        count = builder.add(builder.load(tries), ir.Constant(i64, 1))
        builder.store(count, tries)
        with builder.if_else(builder.icmp_signed(">", count, ir.Constant(
                i64, SPINS_BEFORE_YIELD))) as (long_wait, short_wait):
            with long_wait:
                builder.call(cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield"), [])
            with short_wait:
                if TUNING.pause:
                    builder.call(cgutils.get_or_insert_function(
                        builder.module, ir.FunctionType(ir.VoidType(), []),
                        "llvm.x86.sse2.pause"), [])
        builder.branch(spin)
        builder.position_at_end(done)
        return builder.zext(builder.icmp_signed(">", builder.load(tries), ir.Constant(
            i64, SPINS_BEFORE_YIELD)), i64)

    return sig, codegen


#: int64 flags per thread, a cache line: the meetings it has reached, then the long waits it
#: had seen when it reached an even and an odd one.
MEETING_SLOTS = 8


@njit(cache=True)
def _meeting(flags, k, T, count, long_waits):
    """Thread k's side of the count-th meeting of the T threads, ``flags`` (T MEETING_SLOTS,)
    int64: publish its ``long_waits`` so far and the count, wait until every thread has.

    Returns (the team's long waits, the sum of what every thread published at this meeting,
    the same in every thread; 1 if this thread's own wait here was long, else 0). The counts
    alternate between two slots by the meeting's parity: a thread can reach the next meeting
    of the same parity only after every thread has left this one, so no slot read here is
    written while it is read."""
    slot = 1 + count % 2
    flags[MEETING_SLOTS * k + slot] = long_waits
    _publish(flags, MEETING_SLOTS * k, count)
    waited = 0
    for j in range(T):
        waited |= _wait_until(flags, MEETING_SLOTS * j, count)
    team = 0
    for j in range(T):
        team += flags[MEETING_SLOTS * j + slot]
    return team, waited


def _threads_run_at_once(T):
    """Whether the T chunks of a ``prange(T)`` run on T threads at the same time, as kernels
    whose threads spin on each other need: the OpenMP and workqueue layers give every chunk
    its own thread if Numba has T; TBB's work stealing may run two chunks one after the
    other on one thread, which would never finish."""
    return T <= get_num_threads() and threading_layer() in ("omp", "workqueue")
