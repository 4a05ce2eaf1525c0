# Minimal image for the inference flow; the deployments issue completes it.
FROM python:3.11-slim
WORKDIR /opt/infergraph
COPY pyproject.toml constraints.txt README.md ./
COPY flows flows
COPY tasks tasks
COPY blocks blocks
COPY predictors predictors
COPY api api
RUN pip install --no-cache-dir -c constraints.txt .
CMD ["python", "flows/inference.py"]
