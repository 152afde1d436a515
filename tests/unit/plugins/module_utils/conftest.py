"""Fixtures of the module_utils unit tests."""

from ._kube_discovery import discovery_cache_in_tmp_path  # noqa: F401  pylint: disable=unused-import
