"""The reference side of tests/confluent_compat.rs.

confluent-kafka's own AvroSerializer / AvroDeserializer (the reference
implementation of the Confluent wire format), with its in-memory
MockSchemaRegistryClient. Reads one JSON document on stdin:

    {"cases": [{"topic": "t", "schema": "<avro schema json>",
                "values": [<json value>, ...],
                "frames": ["<hex of a framed payload written by us>", ...]}]}

Schemas are registered in case order through the serializer
(auto.register.schemas), so the mock assigns ids 1, 2, ... as our
stand-in registry does. Writes one JSON document on stdout:

    {"version": "<confluent-kafka version>",
     "cases": [{"id": <schema id>, "serialized": ["<hex>", ...],
                "decoded": [<json value>, ...]}]}
"""

import json
import sys

import confluent_kafka
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import (
    MockSchemaRegistryClient,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main():
    request = json.load(sys.stdin)
    registry = MockSchemaRegistryClient({"url": "mock://compat"})
    out = []
    for case in request["cases"]:
        ctx = SerializationContext(case["topic"], MessageField.VALUE)
        ser = AvroSerializer(registry, case["schema"], conf={"auto.register.schemas": True})
        de = AvroDeserializer(registry)
        serialized = [ser(v, ctx).hex() for v in case["values"]]
        decoded = [de(bytes.fromhex(f), ctx) for f in case["frames"]]
        schema_id = registry.get_latest_version(case["topic"] + "-value").schema_id
        out.append({"id": schema_id, "serialized": serialized, "decoded": decoded})
    version = confluent_kafka.version()
    version = version[0] if isinstance(version, tuple) else version
    json.dump({"version": version, "cases": out}, sys.stdout)


if __name__ == "__main__":
    main()
