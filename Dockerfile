FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY harness ./harness
COPY notebooks ./notebooks
RUN pip install --no-cache-dir '.[api]'
ENV HARNESS_DATA_DIR=/data HARNESS_NOTEBOOKS_DIR=/app/notebooks HARNESS_REPORTS_DIR=/reports
ENTRYPOINT ["harness"]
CMD ["run", "--help"]
