-- Withdraw the canary: the stable takes all replicas.
-- Argo CD patches only the annotation, which Git does not hold: no drift. The request id fires once.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["request.modelrelease.io/abort"] = "argocd-" .. os.date("!%Y%m%dT%H%M%SZ")
return obj
