"""Fock space of a few electrons in M spin-orbitals: momentum/S_z sectors and k-body operators on them.

Spin-orbital i is orbital i mod M with spin i // M (up first). A basis state
is |s⟩ = c†_{s_1} ⋯ c†_{s_N} |0⟩ with s_1 < ⋯ < s_N. A k-body operator

    O = Σ_{P,Q} O_PQ c†_{P_1} ⋯ c†_{P_k} c_{Q_k} ⋯ c_{Q_1}   (P, Q ascending k-tuples)

is applied through the remainders: every |s⟩ is ±c†_Q|R⟩ for each k-subset
Q ⊂ s and R = s ∖ Q (sign of the permutation that sorts (Q, R)), and
⟨s'|O|s⟩ = Σ_R ±O_PQ ±. With the states' amplitudes gathered into a matrix
X[R, Q] (a sparse ±1 map S), one application is y = Sᵀ ((S x) Oᵀ): a dense
product per class of k-tuples (fixed momentum and spin), whatever the
number of electrons. The two-body Coulomb term is the k = 2 case.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import scipy.sparse
from jaxtyping import Complex, Int

from qernel_cli.lattice import Supercell
from qernel_cli.exact.band_basis import label_sum


@dataclasses.dataclass(frozen=True)
class SpinOrbitals:
    """M orbitals (momentum labels ``labels``) times the spins present (1: polarised, 2: both)."""

    labels: Int[np.ndarray, " M"]
    n_spins: int
    supercell: Supercell

    @property
    def n_orbitals(self) -> int:
        return len(self.labels)

    @property
    def size(self) -> int:
        return self.n_orbitals * self.n_spins

    def orbital(self, i):
        return np.asarray(i) % self.n_orbitals

    def spin(self, i):
        return np.asarray(i) // self.n_orbitals

    def label(self, i):
        return self.labels[self.orbital(i)]


def _combinations(items: np.ndarray, k: int) -> Int[np.ndarray, "n k"]:
    count = math.comb(len(items), k)
    if k == 0:
        return np.zeros((1, 0), np.int64)
    flat = np.fromiter(itertools.chain.from_iterable(itertools.combinations(items.tolist(), k)), np.int64, count * k)
    return flat.reshape(count, k)


def sector_size_estimate(space: SpinOrbitals, n_up: int, n_down: int) -> int:
    """States per momentum sector (all sectors together divided by L1·L2)."""
    m = space.n_orbitals
    return -(-math.comb(m, n_up) * math.comb(m, n_down) // space.supercell.n_cells)


@dataclasses.dataclass(frozen=True, eq=False)
class Sector:
    """The basis states of N = n_up + n_down electrons with total crystal momentum ``momentum`` (a label).

    Attributes:
        states: (n, N) ascending spin-orbital indices.
    """

    space: SpinOrbitals
    momentum: int
    n_up: int
    n_down: int
    states: Int[np.ndarray, "n N"]

    @property
    def dimension(self) -> int:
        return len(self.states)


def sectors(space: SpinOrbitals, n_up: int, n_down: int) -> list[Sector]:
    """All momentum sectors (label order) of n_up up- and n_down down-spin electrons."""
    if n_down and space.n_spins < 2:
        raise ValueError("down-spin electrons need n_spins = 2")
    m = space.n_orbitals
    up = _combinations(np.arange(m), n_up)
    down = _combinations(np.arange(m, 2 * m), n_down)
    k_up, k_down = _total_label(space, up), _total_label(space, down)
    out = []
    for label in range(space.supercell.n_cells):
        parts = []
        for ku in np.unique(k_up):
            want = label_sum(np.asarray(label), np.asarray(ku), space.supercell, sign=-1)
            u, d = up[k_up == ku], down[k_down == want]
            if len(u) and len(d):
                parts.append(np.concatenate([np.repeat(u, len(d), 0), np.tile(d, (len(u), 1))], axis=1))
        states = np.concatenate(parts) if parts else np.zeros((0, n_up + n_down), np.int64)
        out.append(Sector(space, label, n_up, n_down, states[np.lexsort(states.T[::-1])] if len(states) else states))
    return out


def _total_label(space: SpinOrbitals, combos: Int[np.ndarray, "n k"]) -> Int[np.ndarray, " n"]:
    total = np.zeros(len(combos), np.int64)
    for j in range(combos.shape[1]):
        total = label_sum(total, space.label(combos[:, j]), space.supercell)
    return total


@dataclasses.dataclass(frozen=True, eq=False)
class TupleClasses:
    """A partition of the ascending k-tuples of spin-orbitals into classes that an operator does not mix.

    ``members[c]``: (n_c, k) the tuples of class c; ``lookup``: k-dimensional
    arrays (M_s, …, M_s) giving each tuple's class and its row in ``members``.
    """

    k: int
    members: list[Int[np.ndarray, "n k"]]
    cls: np.ndarray
    row: np.ndarray


def tuple_classes(space: SpinOrbitals, k: int) -> TupleClasses:
    """Ascending k-tuples classed by total momentum label and number of down spins."""
    tuples = _combinations(np.arange(space.size), k)
    key = _total_label(space, tuples) + space.supercell.n_cells * np.sum(space.spin(tuples), axis=1)
    shape = (space.size,) * k
    cls = np.full(shape, -1, np.int64)
    row = np.full(shape, -1, np.int64)
    members = []
    for c, value in enumerate(np.unique(key)):
        chosen = tuples[key == value]
        cls[tuple(chosen.T)] = c
        row[tuple(chosen.T)] = np.arange(len(chosen))
        members.append(chosen)
    return TupleClasses(k, members, cls, row)


def _colex_rank(combos: Int[np.ndarray, "n j"]) -> Int[np.ndarray, " n"]:
    """Σ_i C(s_i, i + 1): a one-to-one key of ascending j-tuples (colexicographic rank)."""
    top = int(combos.max(initial=0)) + 1
    rank = np.zeros(len(combos), np.int64)
    for i in range(combos.shape[1]):
        rank += np.array([math.comb(x, i + 1) for x in range(top)], np.int64)[combos[:, i]]
    return rank


@dataclasses.dataclass(frozen=True, eq=False)
class _Block:
    gather: scipy.sparse.csr_matrix  # (rows·n_c, n): X = gather @ x
    scatter: scipy.sparse.csr_matrix  # its transpose
    rows: int
    cls: int


@dataclasses.dataclass(frozen=True, eq=False)
class KBodyMap:
    """The ±1 maps S_c of a sector for k-tuples of every class (see the module docstring)."""

    classes: TupleClasses
    blocks: list[_Block]
    dimension: int

    def apply(self, matrices: list[Complex[np.ndarray, "n_c n_c"]], x: Complex[np.ndarray, "n ..."]):
        """Σ_c Sᵀ_c ((S_c x) O_cᵀ) for one operator's class matrices O_c = ``matrices[c]``; x: (n,) or (n, m)."""
        columns = x.reshape(len(x), -1)
        m = columns.shape[1]
        y = np.zeros(columns.shape, np.result_type(x, np.complex128))
        for block in self.blocks:
            o = matrices[block.cls]
            gathered = (block.gather @ columns).reshape(block.rows, o.shape[0], m)
            if m == 1:
                product = (gathered[:, :, 0] @ o.T).reshape(-1, 1)
            else:
                product = (o @ gathered).reshape(-1, m)
            y += block.scatter @ product
        return y.reshape(x.shape)


def k_body_map(sector: Sector, classes: TupleClasses) -> KBodyMap:
    """Build the maps S_c of ``sector`` for the k-tuple classes ``classes``."""
    k = classes.k
    states = sector.states
    n, N = states.shape
    if n == 0 or N < k:
        return KBodyMap(classes, [], n)
    cls_parts, row_parts, rank_parts, state_parts, sign_parts = [], [], [], [], []
    for positions in itertools.combinations(range(N), k):
        rest = [j for j in range(N) if j not in positions]
        q = states[:, positions]
        cls_parts.append(classes.cls[tuple(q.T)])
        row_parts.append(classes.row[tuple(q.T)])
        rank_parts.append(_colex_rank(states[:, rest]) if rest else np.zeros(n, np.int64))
        state_parts.append(np.arange(n))
        sign_parts.append(np.full(n, (-1.0) ** (sum(positions) - k * (k - 1) // 2)))
    cls, row, rank, state, sign = (np.concatenate(p) for p in (cls_parts, row_parts, rank_parts, state_parts, sign_parts))
    blocks = []
    for c in np.unique(cls):
        mask = cls == c
        size = len(classes.members[c])
        remainders, r = np.unique(rank[mask], return_inverse=True)
        gather = scipy.sparse.csr_matrix(
            (sign[mask], (r * size + row[mask], state[mask])), shape=(len(remainders) * size, n)
        )
        blocks.append(_Block(gather, gather.T.tocsr(), len(remainders), int(c)))
    return KBodyMap(classes, blocks, n)
