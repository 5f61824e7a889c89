"""Plugin machinery: name registries, discovery of the suite's and installed plugins, and the code
fingerprints that tie a result to the plugin source that computed it."""
