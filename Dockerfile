FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY harness ./harness
RUN pip install --no-cache-dir .
ENV HARNESS_DATA_DIR=/data
ENTRYPOINT ["harness"]
CMD ["run", "--help"]
