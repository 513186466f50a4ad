"""The case list covers the registry: every registered method has a test case and a host entry (tests/cases.py)."""

from __future__ import annotations

import pytest
from cases import CASES, HOSTS

from lamm_plugin.methods import METHODS


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_registered_method_has_a_case_and_a_host_entry(method):
    assert any(case.method == method for case in CASES), f"tests/cases.py has no case for {method!r}"
    assert method in HOSTS, f"tests/cases.py HOSTS has no entry for {method!r}"
    assert HOSTS[method].trainer == METHODS[method].display_name
    assert (HOSTS[method].lamm_trainer is not None) == METHODS[method].lamm_variant


def test_cases_name_registered_methods_with_their_config_class():
    assert len({case.id for case in CASES}) == len(CASES)
    for case in CASES:
        assert case.method in METHODS, case.id
        assert type(case.config) is METHODS[case.method].config_class, case.id
    assert set(HOSTS) == set(METHODS)
