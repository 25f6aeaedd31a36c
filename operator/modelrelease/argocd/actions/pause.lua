-- Hold the release where it is, as spec.paused does, without a change to the spec (no drift).
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["modelrelease.io/paused"] = "true"
return obj
