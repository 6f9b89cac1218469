"""Loaders for the data files users already have, and streaming them from disk in batches.

* the ``.mat`` files of the FNO paper (MATLAB v5 through scipy, v7.3 through h5py):
  :func:`load_mat`, :func:`fno_burgers_pairs`, :func:`fno_darcy_pairs`, :func:`fno_navier_stokes`;
* PDEBench's HDF5 files: :func:`load_pdebench`, :func:`pdebench_trajectories`,
  :func:`pdebench_dataset` (lazy);
* The Well's HDF5 files ("The Well: a Large-Scale Collection of Diverse Physics Simulations for
  Machine Learning"; h5py alone, no ``the_well`` package): :func:`load_well`,
  :func:`well_trajectories`, :func:`well_dataset` (lazy windows for rollout training);
* data larger than memory: :class:`H5Dataset` (an HDF5 dataset read by sample index) and
  :class:`BatchIterator` (shuffled fixed-size batches with background prefetching), which
  :func:`jaxsolve.train.fit` takes as ``data``.

scipy and h5py are optional: ``pip install "jaxsolve[data]"``.
"""

from ._hdf5 import load_pdebench, pdebench_dataset, pdebench_trajectories
from ._mat import fno_burgers_pairs, fno_darcy_pairs, fno_navier_stokes, load_mat
from ._stream import BatchIterator, H5Dataset
from ._well import WellTrajectories, load_well, well_dataset, well_trajectories

__all__ = [
    "BatchIterator",
    "H5Dataset",
    "WellTrajectories",
    "fno_burgers_pairs",
    "fno_darcy_pairs",
    "fno_navier_stokes",
    "load_mat",
    "load_pdebench",
    "load_well",
    "pdebench_dataset",
    "pdebench_trajectories",
    "well_dataset",
    "well_trajectories",
]
