"""Figures published for defences on AgentDojo, to set beside ours.

They are not comparable one to one, and the report says why: those runs put an LLM agent
in the loop (it may fail a task, or not follow an injection at all), with AgentDojo's
``important_instructions`` attack on benchmark v1 or v1.2 versions, over all four suites
together; this evaluation replays ground truth, so the agent always follows the
injection (the worst case: an undefended replay's attack success rate is close to 100%)
and always solves the task when it is allowed to. Each figure is quoted as the authors
report it; ``approximate`` marks figures read off a plot or rounded in the source.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PublishedFigure", "PUBLISHED"]


@dataclass(frozen=True)
class PublishedFigure:
    defence: str
    setup: str
    utility: str
    attack_success_rate: str
    source: str


PUBLISHED: tuple[PublishedFigure, ...] = (
    PublishedFigure(
        "none (GPT-4o agent)",
        "LLM agent, important_instructions attack, benchmark v1, all suites",
        "69% (no attack)",
        "about 50% (approximate)",
        "Debenedetti et al., AgentDojo, NeurIPS 2024 Datasets & Benchmarks, arXiv:2406.13352",
    ),
    PublishedFigure(
        "tool filter (GPT-4o)",
        "the LLM picks the tools a task may use before it reads any data",
        "somewhat above the undefended agent (approximate)",
        "about 7% (approximate)",
        "Debenedetti et al., arXiv:2406.13352 (defence comparison)",
    ),
    PublishedFigure(
        "prompt-injection detector (GPT-4o)",
        "a BERT classifier on every tool result; a detection stops the agent",
        "about 40% (approximate)",
        "about 8% (approximate)",
        "Debenedetti et al., arXiv:2406.13352 (defence comparison)",
    ),
    PublishedFigure(
        "CaMeL",
        "a privileged LLM writes a program from the user's request alone; values from "
        "tools carry capabilities that security policies check at every tool call",
        "77% of tasks (84% undefended, same model)",
        "provable security: no successful attack except where policies allowed it",
        "Debenedetti et al., Defeating Prompt Injections by Design, arXiv:2503.18813",
    ),
    PublishedFigure(
        "Progent",
        "privilege-control policies over tool calls, written by hand or by an LLM",
        "utility preserved (authors' claim)",
        "41.2% -> 2.2%",
        "Shi et al., Progent: Programmable Privilege Control for LLM Agents, arXiv:2504.11703",
    ),
)
