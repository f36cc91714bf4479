"""From a bundle to a running deployment: the image's Dockerfile
(``tiffin.deploy.dockerfile``), container build contexts and images
(``tiffin.deploy.container``, ``tiffin.deploy.engines``), and Kubernetes manifests
(``tiffin.deploy.kubernetes``) made from checked options (``tiffin.deploy.kubernetes_options``)."""
