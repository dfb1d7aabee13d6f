"""Open QERNEL stores the way users do (``xarray.open_zarr`` with its defaults), strictly."""

from __future__ import annotations

import warnings

import xarray as xr


def open_zarr(path, **kwargs) -> xr.Dataset:
    """``xr.open_zarr(path)`` with warnings as errors; its consolidated metadata must match the live metadata.

    A store without consolidated metadata makes xarray warn (an error here); a
    stale consolidated copy (shapes or attributes of an earlier write) fails the comparison.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path, **kwargs)
    live = xr.open_zarr(path, consolidated=False, **kwargs)
    assert dict(ds.sizes) == dict(live.sizes), (dict(ds.sizes), dict(live.sizes))
    assert ds.attrs == live.attrs
    for name in live.variables:
        assert ds[name].attrs == live[name].attrs, name
    return ds
