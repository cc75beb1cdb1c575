"""``prefetch``: LLVM's ``llvm.prefetch`` as a numba intrinsic.

The loop is bound by cache misses on the conntrack index and the entry rows, each of which stalls
it ~165 ns when met cold (measured here with perf on the compiled code,
benchmarks/profile_jit.py); fetched a few flows ahead they overlap instead.
"""

from __future__ import annotations

from llvmlite import ir as llvm_ir
from numba.core import cgutils, types as nb_types
from numba.extending import intrinsic

__all__ = ["prefetch"]


@intrinsic
def prefetch(typingctx, arr, index):
    """Hint the CPU to fetch ``arr[index]`` (an int, or a tuple for a 2-D array) into cache
    (no effect on results)."""
    sig = nb_types.void(arr, index)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        if isinstance(signature.args[1], nb_types.BaseTuple):     # arr[i, j]
            idx = cgutils.unpack_tuple(builder, args[1], len(signature.args[1]))
        else:
            idx = [args[1]]
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=False)
        i8p, i32 = llvm_ir.IntType(8).as_pointer(), llvm_ir.IntType(32)
        fnty = llvm_ir.FunctionType(llvm_ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen
