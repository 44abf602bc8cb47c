"""dask: the unified op on a dask array of ONE chunk, computed, against the
numpy call on the same data (what a user pays for dask's graph and scheduler
when the data fit one block).

Every timed call of a unified candidate ends with ``.compute`` on the
**synchronous** scheduler (``block``): one chunk gives no parallelism to win,
and the synchronous scheduler's cost is the graph's own, without a thread
pool's hand-offs (the other frameworks run on one thread here too).  The
native candidates are the numpy backend's best calls on the numpy arrays.
"""
from __future__ import annotations

from . import native_numpy

SCHEDULER = "synchronous"


class Natives:
    backend = "dask"
    memory_tool = ""
    sync = None
    copy_bandwidth = None

    def __init__(self, device=None):
        import dask.array as da

        self.da = da
        self.device = "cpu"
        self._np = native_numpy.Natives()
        self._arrays = {}     # id(dask array) -> the numpy array it holds

    def block(self, out):
        return out.compute(scheduler=SCHEDULER) if isinstance(out, self.da.Array) else out

    def put(self, x):
        d = self.da.from_array(x, chunks=x.shape)
        self._arrays[id(d)] = x
        return d

    #: sparse_dot is also timed over this many row chunks (issue 21)
    sparse_chunks = 16

    def put_sparse(self, csr, chunks=1):
        # The plugin's own dask array of a scipy matrix (what ub.sparse_dot(csr, w)
        # builds), in one block (or ``chunks`` row blocks): the CSR held by the
        # graph as data.  A from_array of the CSR would add a getter task that
        # copies the matrix on every compute (issue 21: most of dask's fixed cost here).
        from unibackend._registry import backend
        from unibackend.plugins.dask_backend import chunking

        rows = -(-csr.shape[0] // chunks)
        with chunking((rows, csr.shape[1])):
            d = backend("dask").sparse_from_scipy(csr)
        self._arrays[id(d)] = csr
        return d

    def peak_memory(self, fn, args):
        return None

    def _numpy(self, *xs):
        return tuple(self._arrays[id(x)] for x in xs)

    # -- ops: the numpy natives on the numpy data, no naive rows -------------
    def dispatch(self, a, b):
        return [c for c in self._np.dispatch(*self._numpy(a, b)) if c.kind == "native"]

    def keep_topk(self, x, k):
        (x0,) = self._numpy(x)
        return [c for c in self._np.keep_topk(x0, k) if c.kind == "native"]

    def embedding_mean(self, table, ids):
        return [c for c in self._np.embedding_mean(*self._numpy(table, ids)) if c.kind == "native"]

    def sparse_dot(self, x, w):
        return [c for c in self._np.sparse_dot(*self._numpy(x, w)) if c.kind == "native"]

    # -- scaling on a LocalCluster -------------------------------------------
    def scaling(self, size, settings):
        from .dask_scaling import case_scaling

        return case_scaling(self, size, settings)

    def sharded(self, size, settings):
        from .dask_scaling import case_sharded

        return case_sharded(self, size, settings)
