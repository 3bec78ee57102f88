"""The tasks themselves: the views of the contract, schemas, listing, idempotent creates."""
