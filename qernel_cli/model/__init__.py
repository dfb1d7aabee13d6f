"""The neural wavefunction: periodic features, a FiLM-conditioned GQA + MoE
transformer trunk, generalised orbitals with Bloch envelopes, determinants and a
cusp Jastrow. Moiré units throughout (a_M = 1, E_M = ħ²/(m* a_M²))."""

from qernel_cli.model.attention import GroupedQueryAttention
from qernel_cli.model.block import TransformerBlock, Trunk
from qernel_cli.model.determinant import LOG_FLOOR, combine, log_det
from qernel_cli.model.features import PeriodicFeatures, TokenEmbedding
from qernel_cli.model.film import FiLM
from qernel_cli.model.jastrow import CuspJastrow, periodic_distance
from qernel_cli.model.moe import MixtureOfExperts, load_balance
from qernel_cli.model.envelopes import BlochEnvelope, lowest_plane_waves
from qernel_cli.model.orbitals import GeneralisedOrbitals, SpinOrbitals
from qernel_cli.model.summary import forward_flops, parameter_breakdown, parameter_count
from qernel_cli.model.build import make_wavefunction
from qernel_cli.model.wavefunction import Wavefunction

__all__ = [
    "LOG_FLOOR",
    "BlochEnvelope",
    "CuspJastrow",
    "FiLM",
    "GeneralisedOrbitals",
    "GroupedQueryAttention",
    "MixtureOfExperts",
    "PeriodicFeatures",
    "SpinOrbitals",
    "TokenEmbedding",
    "TransformerBlock",
    "Trunk",
    "Wavefunction",
    "combine",
    "forward_flops",
    "load_balance",
    "log_det",
    "lowest_plane_waves",
    "make_wavefunction",
    "parameter_breakdown",
    "parameter_count",
    "periodic_distance",
]
