#!/usr/bin/env python3
"""Checks docs/api/openapi.yaml against a running pororocad (run by an integration test).

1. Every example in the description validates against its own schema.
2. Every operation is sent to the daemon (over its unix socket): the request examples as written,
   with the endpoint names of the examples mapped to the test's daemons and the source files they
   name created first; path ids are those of the transfer and the job the examples submitted.
   Each answer must have a status the description documents for that operation (never the
   server's "no such API route" or 405), and a JSON answer must validate against that status's
   schema; any other answer (the dashboard's page and files) must be of a media type documented
   for that status, and not empty. A path's {file} is its parameter's example.

  openapi_check.py SPEC --socket PATH --map NAME=ENDPOINT... --export ENDPOINT=DIR...
"""
import argparse
import http.client
import json
import os
import re
import socket
import sys

import yaml


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=90):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class Spec:
    def __init__(self, doc):
        self.doc = doc

    def resolve(self, node):
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise ValueError("only local $ref: " + ref)
            target = self.doc
            for part in ref[2:].split("/"):
                target = target[part]
            node = target
        return node

    def validate(self, value, schema, where, errors):
        """A small JSON Schema subset: nullable, type, required, properties, items, enum, allOf, oneOf,
        minItems, maxItems, minimum, maximum, maxLength, pattern."""
        schema = self.resolve(schema)
        if value is None and schema.get("nullable"):
            return
        for sub in schema.get("allOf", []):
            self.validate(value, sub, where, errors)
        if "oneOf" in schema:
            matches = 0
            for sub in schema["oneOf"]:
                e = []
                self.validate(value, sub, where, e)
                matches += not e
            if matches != 1:
                errors.append(f"{where}: matches {matches} of oneOf, not exactly one")
        t = schema.get("type")
        types = {"object": dict, "array": list, "string": str, "boolean": bool}
        if t in types and not isinstance(value, types[t]):
            errors.append(f"{where}: expected {t}, got {type(value).__name__}")
            return
        if t == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
            errors.append(f"{where}: expected integer, got {value!r}")
            return
        if t == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            errors.append(f"{where}: expected number, got {value!r}")
            return
        if "enum" in schema and value not in schema["enum"]:
            errors.append(f"{where}: {value!r} not one of {schema['enum']}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                errors.append(f"{where}: {value} < minimum {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                errors.append(f"{where}: {value} > maximum {schema['maximum']}")
        if isinstance(value, str):
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                errors.append(f"{where}: longer than {schema['maxLength']}")
            if "pattern" in schema and not re.search(schema["pattern"], value):
                errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if isinstance(value, dict):
            for k in schema.get("required", []):
                if k not in value:
                    errors.append(f"{where}: required field '{k}' missing")
            for k, sub in schema.get("properties", {}).items():
                if k in value:
                    self.validate(value[k], sub, f"{where}.{k}", errors)
        if isinstance(value, list):
            if "minItems" in schema and len(value) < schema["minItems"]:
                errors.append(f"{where}: fewer than {schema['minItems']} items")
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                errors.append(f"{where}: more than {schema['maxItems']} items")
            if "items" in schema:
                for i, v in enumerate(value):
                    self.validate(v, schema["items"], f"{where}[{i}]", errors)


def operations(doc):
    for path, item in doc["paths"].items():
        for method in ("post", "get", "delete"):
            if method in item:
                yield path, method, item[method]


def item_parameters(doc, path, op):
    """The parameters of an operation: its path item's and its own."""
    return doc["paths"][path].get("parameters", []) + op.get("parameters", [])


def json_content(spec, holder):
    holder = spec.resolve(holder)
    return holder.get("content", {}).get("application/json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("--socket", required=True)
    ap.add_argument("--map", action="append", default=[], help="NAME=ENDPOINT: an example endpoint name")
    ap.add_argument("--export", action="append", default=[], help="ENDPOINT=DIR: its export root")
    args = ap.parse_args()
    names = dict(m.split("=", 1) for m in args.map)
    exports = dict(e.split("=", 1) for e in args.export)
    with open(args.spec) as f:
        doc = yaml.safe_load(f)
    spec = Spec(doc)
    errors = []

    # 1. The examples against their own schemas.
    examples = 0
    for path, method, op in operations(doc):
        where = f"{method.upper()} {path}"
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body and "example" in body:
            examples += 1
            spec.validate(body["example"], body["schema"], where + " request example", errors)
        for status, resp in op.get("responses", {}).items():
            content = json_content(spec, resp)
            if content and "example" in content:
                examples += 1
                spec.validate(content["example"], content["schema"], f"{where} {status} example", errors)
    for name, resp in doc["components"]["responses"].items():
        content = resp.get("content", {}).get("application/json", {})
        if "example" in content:
            examples += 1
            spec.validate(content["example"], content["schema"], f"response {name} example", errors)

    # 2. The examples' endpoints become the test's, and the files they read exist.
    def localize(value):
        if isinstance(value, dict):
            return {k: localize(v) for k, v in value.items()}
        if isinstance(value, list):
            return [localize(v) for v in value]
        if isinstance(value, str) and ":" in value:
            name, rest = value.split(":", 1)
            if name in names:
                return names[name] + ":" + rest
        return value

    def prepare(entry):
        src, dst = entry.get("source", ""), entry.get("destination", "")
        ep, _, rel = src.partition(":")
        if ep in exports:
            p = os.path.join(exports[ep], rel.lstrip("/"))
            os.makedirs(os.path.dirname(p), exist_ok=True)
            if entry.get("recursive"):
                os.makedirs(p, exist_ok=True)
                for i in range(3):
                    with open(os.path.join(p, f"f{i}"), "wb") as f:
                        f.write(os.urandom(4096 * (i + 1)))
            elif not os.path.exists(p):
                with open(p, "wb") as f:
                    f.write(os.urandom(300000))
        ep, _, rel = dst.partition(":")
        if ep in exports:
            os.makedirs(os.path.dirname(os.path.join(exports[ep], rel.lstrip("/"))), exist_ok=True)

    def request(method, target, body=None):
        conn = UnixConnection(args.socket)
        payload = json.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if payload else {}
        conn.request(method, target, body=payload, headers=headers)
        resp = conn.getresponse()
        ctype = resp.getheader("Content-Type", "")
        if ctype.startswith("text/event-stream"):
            first = resp.fp.readline()  # the stream stays open: its first line is enough
            conn.close()
            return resp.status, ctype, first.decode()
        data = resp.read().decode()
        conn.close()
        return resp.status, ctype, data

    ids = {}
    # Submissions first, then what reads their results (GET, ls, checksum), cancels last.
    def order(o):
        path, method = o[0], o[1]
        if method == "post" and path in ("/v1/transfers", "/v1/jobs", "/v1/stage"):
            return 0
        if "cancel" in path or method == "delete":
            return 3
        return 1 if method == "get" else 2

    ordered = sorted(operations(doc), key=order)
    sent = 0
    for path, method, op in ordered:
        where = f"{method.upper()} {path}"
        target = path
        if "{id}" in path:
            kind = ("job" if path.startswith("/v1/jobs") else
                    "dataset" if path.startswith("/v1/stage/") else "transfer")
            if kind not in ids:
                errors.append(f"{where}: no {kind} id (the POST example did not make one)")
                continue
            target = path.replace("{id}", ids[kind])
            if method == "get" and target.count("/") == 3:
                target += "?wait=60"  # the long poll: the answer comes once it has ended
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("example")
        if body is not None:
            body = localize(body)
            for e in body.get("entries", [body]):
                prepare(e)
        if "{file}" in path:  # the dashboard's files: the parameter's example
            param = next(p for p in item_parameters(doc, path, op) if p["name"] == "file")
            target = path.replace("{file}", str(param["example"]))
        if path == "/v1/events":
            target += "?since=0"
        status, ctype, data = request(method.upper(), target, body)
        sent += 1
        documented = {str(k) for k in op.get("responses", {})}
        if str(status) not in documented:
            errors.append(f"{where}: answered {status} (documented: {sorted(documented)}): {data[:300]}")
            continue
        if ctype.startswith("text/event-stream"):
            if "text/event-stream" not in spec.resolve(op["responses"][str(status)]).get("content", {}):
                errors.append(f"{where}: answered an event stream, documented otherwise")
            continue
        media = ctype.split(";")[0].strip()
        if media != "application/json":  # the dashboard's page and files
            if media not in spec.resolve(op["responses"][str(status)]).get("content", {}):
                errors.append(f"{where}: answered {media}, documented otherwise")
            elif not data:
                errors.append(f"{where}: answered an empty {media}")
            else:
                print(f"ok  {where} -> {status} ({media})")
            continue
        try:
            answer = json.loads(data)
        except ValueError:
            errors.append(f"{where}: answer is not JSON: {data[:200]}")
            continue
        content = json_content(spec, op["responses"][str(status)])
        if content is None:
            errors.append(f"{where}: answered JSON with {status}, documented without a JSON body")
            continue
        spec.validate(answer, content["schema"], f"{where} -> {status}", errors)
        if method == "post" and path == "/v1/transfers" and status in (200, 201):
            ids["transfer"] = answer["id"]
        if method == "post" and path == "/v1/jobs" and status in (200, 201):
            ids["job"] = answer["id"]
        if method == "post" and path == "/v1/stage" and status in (200, 202):
            ids["dataset"] = answer["id"]
        print(f"ok  {where} -> {status}")

    print(f"{examples} examples checked, {sent} requests sent, {len(errors)} problem(s)")
    for e in errors:
        print("FAIL " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
