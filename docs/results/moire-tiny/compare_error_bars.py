"""Error bars of the tiny-crystal phase diagram: walkers' spread (new) vs blocking of the walker-averaged series (old), same data."""
import json, sys
import numpy as np
from qernel_cli.stores import samples
from qernel_cli.observables import blocking as B
from qernel_cli.observables.transition import estimate_transition
from qernel_cli.workflows.observe import depth_rows
import xarray as xr

pd = sys.argv[1]
group = samples.open_samples(f"{pd}/samples.zarr")
obs = xr.open_zarr(f"{pd}/phasediagram.zarr")
rows = depth_rows(group)
out = []
for v, r in sorted(rows.items()):
    e = samples.read(group, "interaction", (r, slice(None)))
    tot = samples.read(group, "energy", (r, slice(None)))
    new = B.chain_average(tot); new_i = B.chain_average(e)
    old_factor = B.BLOCK_FACTOR
    B.BLOCK_FACTOR = 0.0
    old = B.blocking(tot.mean(axis=1)); old_i = B.blocking(e.mean(axis=1))
    B.BLOCK_FACTOR = old_factor
    out.append(dict(V=v, records=len(r), E=new.mean, E_err_new=new.error, E_err_old=float(old.error), old_converged=bool(old.converged),
                    new_converged=new.converged, tau_new=new.tau, tau_old=float(old.tau),
                    Eint=new_i.mean, Eint_err_new=new_i.error, Eint_err_old=float(old_i.error)))
for o in out:
    print(f"V={o['V']:5.1f} T={o['records']:3d} E={o['E']:.4f} err new {o['E_err_new']:.5f} old {o['E_err_old']:.5f} (x{o['E_err_new']/o['E_err_old']:.2f}) conv new {o['new_converged']} old {o['old_converged']} tau new {o['tau_new']:.2f} old {o['tau_old']:.2f}; Eint err new {o['Eint_err_new']:.5f} old {o['Eint_err_old']:.5f}")
v = np.array([o["V"] for o in out]); m = obs["site_order"].values; me = obs["site_order_error"].values
ei = np.array([o["Eint"] for o in out])
t_new = estimate_transition(v, m, me, ei, np.array([o["Eint_err_new"] for o in out]))
t_old = estimate_transition(v, m, me, ei, np.array([o["Eint_err_old"] for o in out]))
print("new", t_new.as_dict()); print("old", t_old.as_dict())
json.dump({"depths": out, "transition_new_errors": t_new.as_dict(), "transition_old_errors": t_old.as_dict()}, open(sys.argv[2], "w"), indent=1, default=float)
