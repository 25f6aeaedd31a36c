"""
Decoding of the Kubernetes protobuf wire format, for the few kinds kubectl creates imperatively.

``kubectl create namespace|configmap|secret`` sends protobuf bodies and does not fall back to JSON,
so these kinds are decoded here (their field numbers are fixed by the Kubernetes API). Other kinds
answer 415; kubectl sends JSON for them from manifests (``apply -f``/``create -f``), as all other
clients do. Responses are always JSON, which kubectl accepts as well.
"""
from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

__all__ = ["ProtobufError", "decode_object"]

_MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    """The body is not a Kubernetes protobuf object of a supported kind."""


Schema = dict[int, tuple[str, Any]]  # field number -> (JSON name, type or nested schema)

_OWNER_REFERENCE: Schema = {
    1: ("kind", "string"), 3: ("name", "string"), 4: ("uid", "string"), 5: ("apiVersion", "string"),
    6: ("controller", "bool"), 7: ("blockOwnerDeletion", "bool"),
}
_OBJECT_META: Schema = {
    1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"), 5: ("uid", "string"),
    6: ("resourceVersion", "string"), 7: ("generation", "int"), 10: ("deletionGracePeriodSeconds", "int"),
    11: ("labels", "map:string"), 12: ("annotations", "map:string"),
    13: ("ownerReferences", ("repeated", _OWNER_REFERENCE)), 14: ("finalizers", "repeated:string"),
}
_KINDS: dict[tuple[str, str], Schema] = {
    ("v1", "ConfigMap"): {1: ("metadata", _OBJECT_META), 2: ("data", "map:string"), 3: ("binaryData", "map:bytes"),
                          4: ("immutable", "bool")},
    ("v1", "Secret"): {1: ("metadata", _OBJECT_META), 2: ("data", "map:bytes"), 3: ("type", "string"),
                       4: ("stringData", "map:string"), 5: ("immutable", "bool")},
    ("v1", "Namespace"): {1: ("metadata", _OBJECT_META), 2: ("spec", {1: ("finalizers", "repeated:string")})},
}
_ENVELOPE: Schema = {1: ("typeMeta", {1: ("apiVersion", "string"), 2: ("kind", "string")}), 2: ("raw", "raw")}


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, position


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    position = 0
    while position < len(data):
        tag, position = _varint(data, position)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, position = _varint(data, position)
            yield number, value
        elif wire_type == 2:
            length, position = _varint(data, position)
            if position + length > len(data):
                raise ProtobufError("truncated field")
            yield number, data[position:position + length]
            position += length
        elif wire_type in (1, 5):
            position += 8 if wire_type == 1 else 4  # fixed-size numbers: none in the supported kinds
        else:
            raise ProtobufError(f"unsupported wire type {wire_type}")


def _decode(data: bytes, schema: Schema) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for number, value in _fields(data):
        if number not in schema:
            continue  # e.g. timestamps and managed fields, which the server sets itself
        name, kind = schema[number]
        if isinstance(kind, dict):
            result[name] = _decode(_bytes(value), kind)
        elif isinstance(kind, tuple):
            result.setdefault(name, []).append(_decode(_bytes(value), kind[1]))
        elif kind == "raw":
            result[name] = _bytes(value)
        elif kind == "string":
            result[name] = _bytes(value).decode("utf-8")
        elif kind in ("int", "bool"):
            result[name] = bool(value) if kind == "bool" else value
        elif kind == "repeated:string":
            result.setdefault(name, []).append(_bytes(value).decode("utf-8"))
        elif kind.startswith("map:"):
            entry = {key: entry_value for key, entry_value in _fields(_bytes(value))}
            key = _bytes(entry.get(1, b"")).decode("utf-8")
            raw = _bytes(entry.get(2, b""))
            result.setdefault(name, {})[key] = (
                base64.b64encode(raw).decode("ascii") if kind == "map:bytes" else raw.decode("utf-8"))
    # Proto2 serializes unset optional fields as empty strings and zeros; JSON omits them.
    return {key: value for key, value in result.items() if value not in ("", None, 0)}


def _bytes(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise ProtobufError("a length-delimited field was expected")
    return value


def decode_object(body: bytes) -> dict[str, Any]:
    if not body.startswith(_MAGIC):
        raise ProtobufError("not a Kubernetes protobuf envelope")
    envelope = _decode(body[len(_MAGIC):], _ENVELOPE)
    type_meta = envelope.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    schema = _KINDS.get((api_version, kind))
    if schema is None:
        raise ProtobufError(f'protobuf is not supported for {kind or "this kind"} ({api_version}); send JSON')
    return {"apiVersion": api_version, "kind": kind, **_decode(envelope.get("raw", b""), schema)}
