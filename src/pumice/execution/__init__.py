"""How plans run: the ledger and the runners."""
