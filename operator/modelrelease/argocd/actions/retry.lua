-- Start the current stage again after a rollback, or resume an analysis pause.
-- Argo CD patches only the annotation, which Git does not hold: no drift. The request id fires once.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["request.modelrelease.io/retry"] = "argocd-" .. os.date("!%Y%m%dT%H%M%SZ")
return obj
