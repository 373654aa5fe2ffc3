"""Compression: what a trial prunes and distils, in NNI's vocabulary, for Keras 3.

    Compression.for_trial(params, model, splits)  # the strategy: prune / finetune_callbacks / finish
    Pruner(model, config_list)                    # weight masks (pruning.py), AGP
    layer_choices(model, config_list)             # NNI's config_list rules (config_list.py)
    ChannelGraph.of(model)                        # the channel dependency graph (graph.py)
    importance(filters, "l1")                     # the criteria (importance.py; activation_stats.py)
    plan(model, config_list) -> rebuild(...)      # a thinner model (channels.py)
    target_plan(model, ..., flops_target)         # to a FLOPs or latency budget (cost_target.py)
    count_flops(model)                            # FLOPs from the layers (flops.py)
    Distiller(student, teacher, ...)              # knowledge distillation (distill.py)
"""
from .activation_stats import ActivationStats, collect, dead_summary
from .channels import ChannelPlan, dead_plan, plan, rebuild
from .compression import Compression
from .config_list import Choice, layer_choices, layer_targets
from .cost_target import TargetPlan, search_latency, target_plan
from .distill import Distiller, check_teacher, kd_loss
from .flops import count_flops
from .graph import ChannelGraph
from .importance import importance
from .pruning import AGPCallback, Pruner

__all__ = ["ActivationStats", "collect", "dead_summary", "ChannelPlan", "dead_plan", "plan", "rebuild",
           "Compression", "Choice", "layer_choices", "layer_targets", "TargetPlan", "search_latency", "target_plan",
           "Distiller", "check_teacher", "kd_loss", "count_flops", "ChannelGraph", "importance", "AGPCallback",
           "Pruner"]
