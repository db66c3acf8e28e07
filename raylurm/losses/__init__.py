"""Loss functions: pure torch, one per file, each tested against a slow naive reference."""

from raylurm.losses.dss import select_smallest, seq2item_losses, seq2seq_losses
from raylurm.losses.info_nce import info_nce
from raylurm.losses.mpr import adaptive_lambda, mpr_loss, pairwise_ranking, resolve_lambda
from raylurm.losses.next_item import catalogue_softmax, sampled_softmax_logq
from raylurm.losses.sampled_sigmoid import sampled_sigmoid
from raylurm.losses.sampled_softmax import sampled_softmax

__all__ = ["info_nce", "seq2item_losses", "seq2seq_losses", "select_smallest", "adaptive_lambda", "mpr_loss",
           "pairwise_ranking", "resolve_lambda", "sampled_sigmoid", "sampled_softmax", "catalogue_softmax",
           "sampled_softmax_logq"]
