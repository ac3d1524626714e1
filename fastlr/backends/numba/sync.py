"""How the threads of one parallel region meet: atomic flags and a barrier.

Shapes: T threads.

The chosen epoch runs as one ``prange`` over the T threads; within it the threads meet twice
per step (after the partial gradients, after the update). A meeting is a per-thread counter on
its own cache line: ``_publish`` is a release store, ``_wait_until`` spins on acquire loads with
x86's ``pause`` in between (a plain spin on other CPUs: ``TUNING.pause``) and yields the core
between tries once a wait is long (a thread it waits for may share the core), and
``_barrier`` is thread k's side of one meeting. They are LLVM IR through
``numba.core.extending.intrinsic`` because Numba has no atomics of its own.

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
    ordering; after SPINS_BEFORE_YIELD tries, yield the core before every further try."""
    sig = types.void(flags, j, value)

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
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True)
def _barrier(flags, k, T, count):
    """Thread k's side of the count-th meeting of the T threads: publish the count, wait until
    every thread has."""
    _publish(flags, 8 * k, count)
    for j in range(T):
        _wait_until(flags, 8 * j, count)


def _threads_run_at_once(T):
    """Whether the T chunks of a ``prange(T)`` run on T threads at the same time, as kernels
    whose threads spin on each other need: the OpenMP and workqueue layers give every chunk
    its own thread if Numba has T; TBB's work stealing may run two chunks one after the
    other on one thread, which would never finish."""
    return T <= get_num_threads() and threading_layer() in ("omp", "workqueue")
