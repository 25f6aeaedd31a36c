-- Release a hold made by the pause action; an analysis pause is resumed with a retry request.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["modelrelease.io/paused"] = "false"
if obj.status ~= nil and obj.status.pauseReason ~= nil then
  obj.metadata.annotations["request.modelrelease.io/retry"] = "argocd-" .. os.date("!%Y%m%dT%H%M%SZ")
end
return obj
