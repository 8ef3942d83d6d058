"""kaji: the library shared by the kaji charms (PKI, relation contracts, host layer, model)."""
