"""Root conftest: names the docstring examples use."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace: dict) -> None:
    doctest_namespace["torch"] = torch


# Importing it runs the command line.
collect_ignore = ["perceptual_loss/__main__.py"]
