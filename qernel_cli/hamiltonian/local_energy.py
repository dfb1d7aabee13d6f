"""Local energy E_L = Hψ/ψ of the moiré Hamiltonian, in moiré units.

Convention: a log-ψ function maps positions (N, 2) (units of a_M) to a scalar,
either real (log|ψ| of a real wavefunction) or complex (log|ψ| + i arg ψ).
With ψ = e^{log ψ},

    -½ ∇²ψ / ψ = -½ (∇² log ψ + Σ_i (∂_i log ψ)²),

where for complex log ψ the square is the complex square (not |·|²). The real
part is the kinetic local energy; its imaginary part averages to zero over |ψ|²
(the Hamiltonian is Hermitian) and is kept as a diagnostic.

    E_L = kinetic + Σ_i Δ(r_i) + U · E_Coulomb(r),

with Δ the moiré potential (depth v = V/E_M, phase φ) and E_Coulomb the Ewald
energy of unit charges (supplied by the caller, in 1/a_M).

The Laplacian comes from a forward Laplacian (``method="forward"``): the log ψ's
own rule when it has one (a ``forward_laplacian(positions, sparsity_threshold)``
method, e.g. ``Wavefunction.at(c)``, whose determinant head is written out by
hand), else folx's generic one (``method="folx"``, which is always folx); or
from a loop over the 2N coordinates of Hessian-vector products
(``method="hessian"``, the reference).

Everything here is a pure function of arrays. The idiom: make log ψ an equinox
Module (its parameters are then traced arguments, not baked-in constants) and
jit the whole batch with ``eqx.filter_jit``; Python floats are static under
filter_jit, so pass quantities that change between calls (v, U) as arrays:

    energy_fn = eqx.filter_jit(local_energy_batch)
    e = energy_fn(model, walkers, v=v_per_walker, phi_deg=45.0,
                  coulomb_strength=jnp.asarray(U), interaction=ewald)

A log ψ that depends on the Hamiltonian parameters c is closed over them
(e.g. ``eqx.Partial(model, c=c)``) or vmapped together with the walkers.
"""

from __future__ import annotations

from typing import Callable, Literal, Protocol, runtime_checkable

import equinox as eqx
import jax
import jax.numpy as jnp
from folx import forward_laplacian
from jaxtyping import Array, Float, Num, Scalar

from qernel_cli.hamiltonian.potential import total_moire_potential

__all__ = ["LocalEnergy", "kinetic_energy", "laplacian_and_gradient", "local_energy", "local_energy_batch"]

LogPsi = Callable[[Float[Array, "N 2"]], Num[Array, ""]]


@runtime_checkable
class LogPsiWithLaplacian(Protocol):
    """A log ψ of positions (N, 2) a_M that brings its own forward Laplacian (e.g. ``Wavefunction.at(c)``)."""

    def __call__(self, positions: Float[Array, "N 2"]) -> Num[Array, ""]: ...

    def forward_laplacian(
        self, positions: Float[Array, "N 2"], sparsity_threshold: float = 0
    ) -> tuple[Num[Array, ""], Num[Array, "N 2"]]: ...
Method = Literal["forward", "folx", "hessian"]


def _is_complex(log_psi: LogPsi, positions: Float[Array, "N 2"]) -> bool:
    return jnp.issubdtype(jax.eval_shape(log_psi, positions).dtype, jnp.complexfloating)


def _gradient(log_psi: LogPsi, positions: Float[Array, "N 2"]) -> Num[Array, "N 2"]:
    """∂ log ψ / ∂r; for complex log ψ, grad of the real part + i grad of the imaginary part."""
    if _is_complex(log_psi, positions):
        real = jax.grad(lambda x: jnp.real(log_psi(x)))(positions)
        imag = jax.grad(lambda x: jnp.imag(log_psi(x)))(positions)
        return real + 1j * imag
    return jax.grad(log_psi)(positions)


def _hessian_trace(log_psi: LogPsi, positions: Float[Array, "N 2"]) -> tuple[Num[Array, ""], Num[Array, "N 2"]]:
    """Σ_i ∂²log ψ/∂x_i² by one Hessian-vector product per coordinate (fori_loop)."""
    shape = positions.shape
    flat = positions.reshape(-1)

    def grad_flat(x):
        return _gradient(log_psi, x.reshape(shape)).reshape(-1)

    gradient, hvp = jax.linearize(grad_flat, flat)
    n = flat.shape[0]

    def body(i, total):
        unit = jnp.zeros_like(flat).at[i].set(1.0)
        return total + hvp(unit)[i]

    laplacian = jax.lax.fori_loop(0, n, body, jnp.zeros((), gradient.dtype))
    return laplacian, gradient.reshape(shape)


def _forward_laplacian(
    log_psi: LogPsi, positions: Float[Array, "N 2"], sparsity_threshold: float
) -> tuple[Num[Array, ""], Num[Array, "N 2"]]:
    # disable_jit: folx would otherwise wrap its interpreter in a nested jax.jit;
    # the caller jits the whole local energy anyway.
    result = forward_laplacian(log_psi, sparsity_threshold, disable_jit=True)(positions)
    # For a scalar output the dense Jacobian has shape (positions.size,), in the
    # C order of the flattened positions.
    gradient = result.jacobian.dense_array.reshape(positions.shape)
    return result.laplacian, gradient


def laplacian_and_gradient(
    log_psi: LogPsi, positions: Float[Array, "N 2"], method: Method = "forward", *, sparsity_threshold: float = 0
) -> tuple[Num[Array, ""], Num[Array, "N 2"]]:
    """(∇² log ψ, ∇ log ψ) at ``positions``; complex when log ψ is complex.

    Args:
        log_psi: positions (N, 2) → scalar log ψ (real or complex).
        positions: (N, 2) float array.
        method: "forward" (the log ψ's own ``forward_laplacian`` if it has
            one, else folx), "folx" (folx's forward Laplacian of the whole
            log ψ) or "hessian" (loop of Hessian-vector products over the 2N
            coordinates; reference).
        sparsity_threshold: folx's sparsity propagation threshold (0: dense
            Jacobians; folx suggests ~0.6 when enabling). Not for "hessian".
    """
    if method == "forward" and isinstance(log_psi, LogPsiWithLaplacian):
        return log_psi.forward_laplacian(positions, sparsity_threshold)
    if method in ("forward", "folx"):
        return _forward_laplacian(log_psi, positions, sparsity_threshold)
    if method == "hessian":
        return _hessian_trace(log_psi, positions)
    raise ValueError(f"method must be 'forward', 'folx' or 'hessian', got {method!r}")


def kinetic_energy(
    log_psi: LogPsi, positions: Float[Array, "N 2"], method: Method = "forward", *, sparsity_threshold: float = 0
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """(Re, Im) of -½(∇² log ψ + Σ (∂ log ψ)²), moiré units."""
    laplacian, gradient = laplacian_and_gradient(log_psi, positions, method, sparsity_threshold=sparsity_threshold)
    kinetic = -0.5 * (laplacian + jnp.sum(gradient * gradient))
    return jnp.real(kinetic), jnp.imag(kinetic)


class LocalEnergy(eqx.Module):
    """Components of the local energy of one configuration (moiré units, E_M).

    Attributes:
        kinetic: Re of -½ ∇²ψ/ψ.
        kinetic_imag: Im of -½ ∇²ψ/ψ (diagnostic; zero mean over |ψ|²).
        potential: Σ_i Δ(r_i).
        interaction: U × Ewald Coulomb energy (0 when off).
        total: kinetic + potential + interaction.
    """

    kinetic: Float[Array, "*batch"]
    kinetic_imag: Float[Array, "*batch"]
    potential: Float[Array, "*batch"]
    interaction: Float[Array, "*batch"]
    total: Float[Array, "*batch"]


def local_energy(
    log_psi: LogPsi,
    positions: Float[Array, "N 2"],
    *,
    v: float | Scalar,
    phi_deg: float,
    coulomb_strength: float | Scalar,
    interaction: Callable[[Float[Array, "N 2"]], Float[Array, ""]] | None = None,
    method: Method = "forward",
    sparsity_threshold: float = 0,
) -> LocalEnergy:
    """Local energy of one configuration.

    Args:
        log_psi: positions (N, 2) → log ψ, real or complex (e.g. an equinox Module).
        positions: (N, 2) electron positions in a_M.
        v: moiré depth V/E_M (may be traced, e.g. per walker).
        phi_deg: moiré phase φ in degrees (a Python float).
        coulomb_strength: U = a_M/a_B* (may be traced).
        interaction: positions → Coulomb energy of unit charges in 1/a_M (the
            Ewald sum); None, or a Python ``coulomb_strength == 0``, turns it off.
        method: "forward", "folx" or "hessian" (see :func:`laplacian_and_gradient`).
        sparsity_threshold: see :func:`laplacian_and_gradient`.

    Jitting: Python floats are static under ``eqx.filter_jit``; pass ``v`` (and
    ``coulomb_strength``) as arrays when they change between calls.
    """
    kinetic, kinetic_imag = kinetic_energy(log_psi, positions, method, sparsity_threshold=sparsity_threshold)
    potential = total_moire_potential(positions, v, phi_deg)
    off = interaction is None or (isinstance(coulomb_strength, (int, float)) and coulomb_strength == 0)
    if off:
        coulomb = jnp.zeros((), potential.dtype)
    else:
        coulomb = coulomb_strength * interaction(positions)
    return LocalEnergy(
        kinetic=kinetic,
        kinetic_imag=kinetic_imag,
        potential=potential,
        interaction=coulomb,
        total=kinetic + potential + coulomb,
    )


def local_energy_batch(
    log_psi: LogPsi,
    positions: Float[Array, "W N 2"],
    *,
    v: float | Float[Array, "*W"],
    phi_deg: float,
    coulomb_strength: float | Float[Array, "*W"],
    interaction: Callable[[Float[Array, "N 2"]], Float[Array, ""]] | None = None,
    method: Method = "forward",
    sparsity_threshold: float = 0,
) -> LocalEnergy:
    """:func:`local_energy` vmapped over walkers; ``v`` and ``coulomb_strength`` scalar or per walker."""
    n_walkers = positions.shape[0]
    v = jnp.broadcast_to(jnp.asarray(v), (n_walkers,))
    off = interaction is None or (isinstance(coulomb_strength, (int, float)) and coulomb_strength == 0)
    strength = jnp.zeros((n_walkers,)) if off else jnp.broadcast_to(jnp.asarray(coulomb_strength), (n_walkers,))

    def one(x, v_, u_):
        return local_energy(
            log_psi, x, v=v_, phi_deg=phi_deg, coulomb_strength=0.0 if off else u_,
            interaction=interaction, method=method, sparsity_threshold=sparsity_threshold,
        )

    return jax.vmap(one)(positions, v, strength)
