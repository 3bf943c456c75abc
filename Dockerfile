# Two images from one file. `worker`: the core and pymongo only, what `harness worker` needs
# (no pandas, matplotlib, papermill, Jupyter). `harness` (the default, last stage): every
# extra, for runs, sweeps, reports and the HTTP API.
FROM python:3.11-slim AS worker
WORKDIR /app
COPY pyproject.toml README.md ./
COPY harness ./harness
RUN pip install --no-cache-dir '.[mongo]'
ENV HARNESS_DATA_DIR=/data
ENTRYPOINT ["harness"]
CMD ["worker"]

FROM worker AS harness
COPY notebooks ./notebooks
RUN pip install --no-cache-dir '.[mongo,notebooks,api]'
ENV HARNESS_NOTEBOOKS_DIR=/app/notebooks HARNESS_REPORTS_DIR=/reports
CMD ["run", "--help"]
