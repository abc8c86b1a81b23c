"""A hint to the CPU: start loading an array element's cache line now, because it will be
read soon (LLVM's ``llvm.prefetch``; no effect on results, and none at all where the CPU
has no prefetch instruction).

The sparse kernels visit a batch's rows in a shuffled order, so each row's CSR entries
sit at a random place of a large array: without a hint the CPU waits for them row after
row (on an 846 MB file about a third of a sparse logistic step; README, "Sparse logistic
regression"). :func:`prefetch_ahead` asks for the row :data:`ROWS_AHEAD` rows ahead:

    for i in range(-ROWS_AHEAD, rows.size):
        prefetch_ahead(X, rows, i)
        if i >= 0:
            ...  # row rows[i]
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core.extending import intrinsic

_JIT = {"cache": True, "nogil": True, "error_model": "numpy", "boundscheck": False}

#: How many rows ahead of the one being computed :func:`prefetch_row` is asked for.
ROWS_AHEAD = 8


@intrinsic
def prefetch(typingctx, array, index):
    """Prefetch ``array[index]`` (read, kept in every cache level); numba-only."""
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        view = context.make_array(signature.args[0])(context, builder, args[0])
        address = builder.bitcast(builder.gep(view.data, [args[1]]),
                                  ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        hint = builder.module.declare_intrinsic(
            "llvm.prefetch", fnty=ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32]))
        # (read, locality 3: keep in all levels, data cache)
        builder.call(hint, [address, ir.Constant(i32, 0), ir.Constant(i32, 3),
                            ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


@njit(**_JIT)
def prefetch_row(data, indices, indptr, r):
    """Prefetch the cache lines of CSR row ``r``'s entries (values and column indices)."""
    lo, hi = indptr[r], indptr[r + 1]
    if hi <= lo:
        return
    for p in range(lo, hi, max(1, 64 // indices.itemsize)):
        prefetch(indices, p)
    prefetch(indices, hi - 1)
    for p in range(lo, hi, max(1, 64 // data.itemsize)):
        prefetch(data, p)
    prefetch(data, hi - 1)


@njit(**_JIT)
def prefetch_ahead(X, rows, i):
    """Prefetch the CSR row ``rows[i + ROWS_AHEAD]`` of ``X = (data, indices, indptr)``
    (nothing past the end of ``rows`` or for a row number outside ``X``)."""
    if i + ROWS_AHEAD < rows.size:
        data, indices, indptr = X
        r = rows[i + ROWS_AHEAD]
        if 0 <= r < indptr.size - 1:
            prefetch_row(data, indices, indptr, r)
