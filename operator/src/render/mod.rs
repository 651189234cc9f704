//! Pure rendering of a WoodpeckerCluster into Kubernetes objects.
