"""Validates a route's OpenAPI document (the file at OPENAPI_FILE) with openapi-spec-validator, as
OpenAPI 3.1, and checks that every operation is reachable by its path and has an operationId."""

import json
import os
import sys

from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator


def main() -> int:
    with open(os.environ["OPENAPI_FILE"], encoding="utf-8") as f:
        doc = json.load(f)
    validate(doc, cls=OpenAPIV31SpecValidator)
    ids = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "operationId" in op, f"{method} {path} has no operationId"
            ids.append(op["operationId"])
    assert len(ids) == len(set(ids)), f"operationIds repeat: {ids}"
    print(f"valid OpenAPI {doc['openapi']}: {len(ids)} operations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
