# One image for the api, the worker and the one-shot setup job.
FROM python:3.12.8-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY recovery ./recovery
COPY workflows ./workflows
COPY activities ./activities
COPY api ./api
COPY worker ./worker
COPY scripts ./scripts
# The processes run the code under /app (the current directory comes first on sys.path),
# which their user may not write: its bytecode is compiled here, or each process start would
# compile every module from source.
RUN pip install . \
    && python -m compileall -q recovery workflows activities api worker scripts \
    && useradd --system --uid 10001 --no-create-home recovery

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1
CMD ["python", "-m", "api"]
