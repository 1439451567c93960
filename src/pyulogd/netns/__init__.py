"""Following network namespaces: names, the directory watcher, the shared registry, inputs."""
