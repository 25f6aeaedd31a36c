# The operator image: `modelrelease run`, as the Helm chart in charts/model-release-operator runs it.
#
#   docker build -f operator.Dockerfile -t ghcr.io/modelrelease/operator:0.1.0 .
#   docker run --rm --read-only --tmpfs /tmp -v "$HOME/.kube:/kube:ro" -e KUBECONFIG=/kube/config \
#     ghcr.io/modelrelease/operator:0.1.0 --all-namespaces
#
# Only the operator is installed (no trainer extra: TensorFlow belongs to the trainer image). It runs
# as uid 10001 with a read-only root filesystem; the only writable path is /tmp (an emptyDir in the
# chart). Pin the base by digest as well (python:3.11.14-slim-trixie@sha256:...) where builds must be
# reproducible.

# Build: the package and its pinned dependencies into a virtualenv that the runtime stage copies whole.
FROM python:3.11.14-slim-trixie AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/modelrelease

WORKDIR /src
# Only what the build reads: the project metadata, the README it names, and the package sources
# (setuptools looks for packages under operator/ and trainer_image/; the trainer's modules are small
# and import nothing heavy unless they are run).
COPY pyproject.toml README.md ./
COPY operator/modelrelease ./operator/modelrelease
COPY trainer_image/modelrelease_trainer ./trainer_image/modelrelease_trainer
RUN /opt/modelrelease/bin/pip install . \
 && /opt/modelrelease/bin/python -m compileall -q /opt/modelrelease/lib \
 && /opt/modelrelease/bin/modelrelease run --help > /dev/null

# Runtime: the virtualenv, a non-root user, nothing else.
FROM python:3.11.14-slim-trixie

LABEL org.opencontainers.image.title="model-release-operator" \
      org.opencontainers.image.description="Trains, gates, canaries and releases ML models in stages (ModelRelease)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --gid 10001 modelrelease \
 && useradd --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin modelrelease

COPY --from=build /opt/modelrelease /opt/modelrelease

# Byte code was compiled at build time: the running container cannot write __pycache__ folders.
ENV PATH=/opt/modelrelease/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp

USER 10001:10001
WORKDIR /tmp
# kopf's liveness endpoint, when started with --liveness http://0.0.0.0:8080/healthz.
EXPOSE 8080
ENTRYPOINT ["modelrelease", "run"]
CMD ["--all-namespaces", "--liveness", "http://0.0.0.0:8080/healthz", "--log-format", "json"]
