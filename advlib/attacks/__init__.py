"""Attacks behind one call: `run_attack(spec, model, x, y) -> AttackResult`."""

from .base import Attack, AttackResult, lp_norms, predict, project, project_l1_ball
from .pgd import PGD, pgd
from .registry import ATTACKS, attack_info, create_attack, list_attacks, register_attack, run_attack

__all__ = [
    "Attack",
    "AttackResult",
    "ATTACKS",
    "PGD",
    "attack_info",
    "create_attack",
    "list_attacks",
    "lp_norms",
    "pgd",
    "predict",
    "project",
    "project_l1_ball",
    "register_attack",
    "run_attack",
]
