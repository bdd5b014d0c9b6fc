"""proxylm.api: its module docstring is a worked example, run here as a doctest.   pytest tests/test_api.py"""

import doctest

import proxylm.api


def test_api_docstring_examples_run():
    result = doctest.testmod(proxylm.api, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0
