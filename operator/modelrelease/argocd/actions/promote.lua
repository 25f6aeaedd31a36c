-- Finish the current canary step now.
-- Argo CD patches only the annotation, which Git does not hold: no drift. The request id fires once.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["request.modelrelease.io/promote"] = "argocd-" .. os.date("!%Y%m%dT%H%M%SZ")
return obj
