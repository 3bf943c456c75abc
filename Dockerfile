# Two images from one file. `worker`: the core and the store drivers (pymongo, psycopg) only,
# what `harness worker` needs (no pandas, matplotlib, papermill, Jupyter). `harness` (the default, last stage): every
# extra, for runs, sweeps, reports and the HTTP API.
# Each installs its lock (the versions of requirements.lock, checked against their hashes;
# `make lock` writes all three), then the harness itself without dependencies: what CI tested.
FROM python:3.11-slim AS worker
WORKDIR /app
COPY requirements-worker.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements-worker.lock
COPY pyproject.toml README.md ./
COPY harness ./harness
RUN pip install --no-cache-dir --no-deps . && pip check
ENV HARNESS_DATA_DIR=/data
ENTRYPOINT ["harness"]
CMD ["worker"]

FROM worker AS harness
COPY requirements-harness.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements-harness.lock
# The notebooks came with the package (harness/notebooks/, package data).
ENV HARNESS_REPORTS_DIR=/reports
CMD ["run", "--help"]
