"""SNMP (v1, v2c, v3): the `kind: snmp` collector and its parts.

- `codec`, `transport`, `client`: the lean v1/v2c path (dutyd's own BER codec, one shared UDP
  socket, prebuilt requests) that every v1/v2c poll takes;
- `v3`: pysnmp 7's engine (one per daemon) for SNMPv3 with USM, and the reference the lean
  path is tested against;
- `profiles/`: what to read and how to name it (`switch`, `ups`, `sensor`, `lldp`, `bridge`,
  the room probes `entity_sensor`, `apc_probe` and `apc_uio`, user OID maps), one module and one
  registration each;
- `collector`: the target model and the collector that ties them together;
- `trap_*`: the SNMP trap and inform listener (see README.md, "SNMP traps and informs").
"""
