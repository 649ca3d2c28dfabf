# Storage is encrypted at rest. Turning encryption off is denied; leaving it unset on a
# database (where the module's default decides) is a warning a reviewer should see.
package tfgen.storage

deny contains {"rule": "storage-encrypted", "msg": msg} if {
	some path, doc in input.files
	some kind in {"aws_db_instance", "aws_rds_cluster"}
	some name, bodies in doc.resource[kind]
	some body in bodies
	body.storage_encrypted == false
	msg := sprintf("%v: %v.%v turns storage encryption off", [path, kind, name])
}

deny contains {"rule": "storage-encrypted", "msg": msg} if {
	some path, doc in input.files
	some name, bodies in doc.resource.aws_ebs_volume
	some body in bodies
	body.encrypted == false
	msg := sprintf("%v: aws_ebs_volume.%v is not encrypted", [path, name])
}

deny contains {"rule": "storage-encrypted", "msg": msg} if {
	some path, doc in input.files
	some name, bodies in doc.module
	some body in bodies
	contains(body.source, "aws-rds")
	body.storage_encrypted == false
	msg := sprintf("%v: module.%v turns storage encryption off", [path, name])
}

warn contains {"rule": "storage-encryption-explicit", "msg": msg} if {
	some path, doc in input.files
	some name, bodies in doc.module
	some body in bodies
	contains(body.source, "aws-rds")
	not "storage_encrypted" in object.keys(body)
	msg := sprintf("%v: module.%v does not set storage_encrypted; the module's default applies", [path, name])
}

warn contains {"rule": "storage-encryption-explicit", "msg": msg} if {
	some path, doc in input.files
	some name, bodies in doc.resource.aws_db_instance
	some body in bodies
	not "storage_encrypted" in object.keys(body)
	msg := sprintf("%v: aws_db_instance.%v does not set storage_encrypted (AWS default: off)", [path, name])
}
