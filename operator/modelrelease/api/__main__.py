"""`python -m modelrelease.api > crds/modelrelease.io_modelreleases.yaml` prints the CRD."""

import sys

import yaml

from modelrelease.api.crd import build_crd

yaml.safe_dump(build_crd(), sys.stdout, sort_keys=False, width=100)
